//! A runner for SingleStepTests-format instruction tests (JSON arrays,
//! gzip'd or not), such as the hardware-captured 80286 real-mode set in
//! `../shared/conformance/sst286-real` (read its README).
//!
//! Each test loads registers and memory into a fresh 16 MiB machine in real
//! mode, runs instructions until the CPU halts (the instruction under test is
//! followed by HLT, and exception vectors point at a HLT), and compares
//! registers and memory with the captured final state. The differences a
//! 386-class CPU is expected to show against a 286 are handled explicitly:
//! undefined flags are masked per instruction with core's table, FLAGS bits
//! 12-15 are ignored where FLAGS is loaded from memory, and encodings longer
//! than the 286's 10-byte limit are skipped.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use ringside_core::cpu::flags::{undefined_flags, FIXED1};
use ringside_core::cpu::{reg, SegReg, Segment, TableReg};
use ringside_core::{Engine, Exit, Machine};
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SstError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a SingleStepTests JSON array: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0} holds no test files (*.json or *.json.gz)")]
    Empty(PathBuf),
    #[error("cannot create a machine: {0}")]
    Machine(String),
}

// Every key of the format is known: a file with others (32-bit register
// names, say) is not this format, and running it from zeroed registers would
// report every test failed. Such a file is refused with the key named.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Regs {
    ax: Option<u16>,
    bx: Option<u16>,
    cx: Option<u16>,
    dx: Option<u16>,
    cs: Option<u16>,
    ss: Option<u16>,
    ds: Option<u16>,
    es: Option<u16>,
    sp: Option<u16>,
    bp: Option<u16>,
    si: Option<u16>,
    di: Option<u16>,
    ip: Option<u16>,
    flags: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    regs: Regs,
    ram: Vec<(u32, u8)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionInfo {
    number: u8,
    /// Where the captured FLAGS image was pushed: known, not needed (the
    /// pushed FLAGS are compared with the rest of RAM).
    #[serde(default, rename = "flag_address")]
    _flag_address: serde::de::IgnoredAny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Test {
    /// The test's index and hash in its file: known, not needed.
    #[serde(default, rename = "idx")]
    _idx: serde::de::IgnoredAny,
    #[serde(default, rename = "hash")]
    _hash: serde::de::IgnoredAny,
    name: String,
    bytes: Vec<u8>,
    initial: State,
    #[serde(rename = "final")]
    final_: State,
    exception: Option<ExceptionInfo>,
}

/// How one test ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed(String),
    /// Excluded by a rule written in this runner, with its reason.
    Skipped(&'static str),
}

/// Results for one file (one opcode form).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FileResult {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// The first few failures, described.
    pub failures: Vec<String>,
    /// Skipped tests by the exclusion rule that skipped them.
    pub skip_reasons: BTreeMap<&'static str, u32>,
}

/// The whole run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub per_file: BTreeMap<String, FileResult>,
}

impl Report {
    /// Skipped tests by reason, over all files.
    pub fn skip_reasons(&self) -> BTreeMap<&'static str, u32> {
        let mut all = BTreeMap::new();
        for r in self.per_file.values() {
            for (k, v) in &r.skip_reasons {
                *all.entry(*k).or_default() += v;
            }
        }
        all
    }

    pub fn totals(&self) -> (u32, u32, u32) {
        self.per_file.values().fold((0, 0, 0), |(p, f, s), r| {
            (p + r.passed, f + r.failed, s + r.skipped)
        })
    }

    /// The summary line: `N passed, M failed, K skipped`.
    pub fn summary(&self) -> String {
        let (p, f, s) = self.totals();
        format!("{p} passed, {f} failed, {s} skipped")
    }
}

/// The instruction length limit of the 80286 (SDM-era 286 manual: longer
/// encodings raise #UD there, #GP only past 15 bytes on a 386).
const MAX_286_LENGTH: usize = 10;

/// Run every test file in `dir` on engines made by `make_engine`.
pub fn run_dir(
    dir: &Path,
    make_engine: &(dyn Fn() -> Box<dyn Engine> + Sync),
    threads: usize,
) -> Result<Report, SstError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| SstError::Io {
            path: dir.to_owned(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n.ends_with(".json") || n.ends_with(".json.gz")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(SstError::Empty(dir.to_owned()));
    }
    let threads = threads.max(1);
    let chunks: Vec<Vec<PathBuf>> = (0..threads)
        .map(|t| files.iter().skip(t).step_by(threads).cloned().collect())
        .collect();
    let results: Vec<Result<Vec<(String, FileResult)>, SstError>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|f| run_file(f, make_engine).map(|r| (file_key(f), r)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a conformance worker thread panicked"))
            .collect()
    });
    let mut report = Report::default();
    for r in results {
        for (k, v) in r? {
            report.per_file.insert(k, v);
        }
    }
    Ok(report)
}

fn file_key(p: &Path) -> String {
    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    n.trim_end_matches(".gz")
        .trim_end_matches(".json")
        .to_owned()
}

fn load_tests(path: &Path) -> Result<Vec<Test>, SstError> {
    let io = |source| SstError::Io {
        path: path.to_owned(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let text = if raw.starts_with(&[0x1F, 0x8B]) {
        let mut s = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut s)
            .map_err(io)?;
        s
    } else {
        raw
    };
    serde_json::from_slice(&text).map_err(|source| SstError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Run one file of tests.
pub fn run_file(
    path: &Path,
    make_engine: &dyn Fn() -> Box<dyn Engine>,
) -> Result<FileResult, SstError> {
    let tests = load_tests(path)?;
    let mut r = FileResult::default();
    for t in &tests {
        match run_test(t, make_engine)? {
            Verdict::Passed => r.passed += 1,
            Verdict::Skipped(why) => {
                r.skipped += 1;
                *r.skip_reasons.entry(why).or_default() += 1;
            }
            Verdict::Failed(why) => {
                r.failed += 1;
                if r.failures.len() < 5 {
                    r.failures
                        .push(format!("{} ({:02x?}): {why}", t.name, t.bytes));
                }
            }
        }
    }
    Ok(r)
}

fn run_test(t: &Test, make_engine: &dyn Fn() -> Box<dyn Engine>) -> Result<Verdict, SstError> {
    let mut dec = Decoder::new(16, &t.bytes, DecoderOptions::NONE);
    let insn = dec.decode();
    let len = if insn.is_invalid() {
        t.bytes.len().saturating_sub(1)
    } else {
        insn.len()
    };
    if len > MAX_286_LENGTH {
        return Ok(Verdict::Skipped(
            "longer than the 286's 10-byte instruction limit",
        ));
    }
    if let Some(reason) = excluded(t, &insn) {
        return Ok(Verdict::Skipped(reason));
    }
    let mut m = Machine::with_ram_mib(16).map_err(|e| SstError::Machine(e.to_string()))?;
    load_initial(&mut m, &t.initial);
    let mut engine = make_engine();
    let mut halted = false;
    for _ in 0..64 {
        match engine.step(&mut m) {
            Ok(Exit::Stopped(_)) | Ok(Exit::Halted) => {
                halted = true;
                break;
            }
            // No breakpoints are set here; a step never stops at one.
            Ok(Exit::BudgetSpent) | Ok(Exit::WaitingForInput) | Ok(Exit::Breakpoint) => {
                if m.cpu.run.halted {
                    halted = true;
                    break;
                }
            }
            Ok(Exit::Event(e)) => {
                return Ok(Verdict::Failed(format!("event {e:?} returned undelivered")))
            }
            Err(e) => return Ok(Verdict::Failed(format!("engine error: {e}"))),
        }
    }
    if !halted {
        return Ok(Verdict::Failed(
            "did not reach the HLT after the instruction".into(),
        ));
    }
    Ok(compare(t, &insn, &mut m))
}

fn load_initial(m: &mut Machine, s: &State) {
    let r = &s.regs;
    let g = |v: Option<u16>| v.unwrap_or(0) as u32;
    m.cpu.gpr[reg::EAX] = g(r.ax);
    m.cpu.gpr[reg::ECX] = g(r.cx);
    m.cpu.gpr[reg::EDX] = g(r.dx);
    m.cpu.gpr[reg::EBX] = g(r.bx);
    m.cpu.gpr[reg::ESP] = g(r.sp);
    m.cpu.gpr[reg::EBP] = g(r.bp);
    m.cpu.gpr[reg::ESI] = g(r.si);
    m.cpu.gpr[reg::EDI] = g(r.di);
    for (s, v) in [
        (SegReg::Cs, r.cs),
        (SegReg::Ss, r.ss),
        (SegReg::Ds, r.ds),
        (SegReg::Es, r.es),
        (SegReg::Fs, Some(0)),
        (SegReg::Gs, Some(0)),
    ] {
        m.cpu.seg[s as usize] = Segment::real_mode(v.unwrap_or(0));
    }
    m.cpu.eip = g(r.ip);
    // FLAGS bits 12-15 were random loader inputs on the 286 (README).
    m.cpu.eflags = (g(r.flags) & 0x0FFF) | FIXED1;
    m.cpu.idtr = TableReg {
        base: 0,
        limit: 0x3FF,
        _pad: 0,
    };
    for &(addr, byte) in &s.ram {
        let _ = m.write_ram(addr & 0xFF_FFFF, &[byte]);
    }
}

/// Exclusions: behaviour where a 286 and an IA-32 CPU legitimately differ,
/// each rule stated on the test's own data.
fn excluded(t: &Test, insn: &iced_x86::Instruction) -> Option<&'static str> {
    // SDM Vol. 2A LOCK: IA-32 raises #UD for LOCK on an instruction that is
    // not a locked read-modify-write of memory; the 286 ignores the prefix.
    if t.bytes
        .iter()
        .take_while(|&&b| is_prefix(b) || b == 0x66 || b == 0x67)
        .any(|&b| b == 0xF0)
        && insn.is_invalid()
    {
        return Some("LOCK on a non-lockable instruction: #UD on IA-32, ignored by the 286");
    }
    // SDM Vol. 3A 20.1.3 (real-mode exceptions): a stack-segment limit
    // violation is #SS on IA-32; the 286 captured here reports vector 13.
    if t.exception.as_ref().is_some_and(|e| e.number == 13) && stack_relative(t, insn) {
        return Some("stack-segment limit violation: #SS (12) on IA-32, vector 13 on the 286");
    }
    // MOV to or from segment-register fields 4 and 5 (8C/8E with reg 4 or
    // 5): FS and GS on IA-32 (SDM Vol. 2B MOV), #UD on the 286, which has
    // only four segment registers.
    if insn.mnemonic() == Mnemonic::Mov
        && (0..insn.op_count()).any(|n| {
            insn.op_kind(n) == iced_x86::OpKind::Register
                && matches!(
                    insn.op_register(n),
                    iced_x86::Register::FS | iced_x86::Register::GS
                )
        })
    {
        return Some("MOV with segment register FS or GS: valid on IA-32, #UD on the 286");
    }
    // A 16-bit string instruction whose SI or DI reaches offset FFFF: the 286
    // splits the word across the segment wrap, IA-32 raises #GP/#SS.
    if string_word_reaches_ffff(t, insn) {
        return Some("string word access at offset FFFF: wraps on the 286, #GP/#SS on IA-32");
    }
    None
}

fn stack_relative(t: &Test, insn: &iced_x86::Instruction) -> bool {
    use iced_x86::Register;
    let mem = (0..insn.op_count()).any(|n| insn.op_kind(n) == iced_x86::OpKind::Memory);
    let _ = t;
    (mem && insn.memory_segment() == Register::SS)
        || insn.stack_pointer_increment() != 0
        || insn.mnemonic() == Mnemonic::Leave
}

fn string_word_reaches_ffff(t: &Test, insn: &iced_x86::Instruction) -> bool {
    use iced_x86::OpKind;
    let kinds: Vec<OpKind> = (0..insn.op_count()).map(|n| insn.op_kind(n)).collect();
    let uses_si = kinds.contains(&OpKind::MemorySegSI);
    let uses_di = kinds.contains(&OpKind::MemoryESDI);
    if !(uses_si || uses_di) || insn.memory_size().size() != 2 {
        return false;
    }
    let r = &t.initial.regs;
    let cx0 = r.cx.unwrap_or(0) as u32;
    let rep = insn.has_rep_prefix() || insn.has_repne_prefix() || insn.has_repe_prefix();
    let iterations = if rep {
        cx0.wrapping_sub(t.final_.regs.cx.map_or(cx0, u32::from)) & 0xFFFF
    } else {
        1
    } + 1;
    let down = r.flags.unwrap_or(0) & 0x400 != 0;
    let reaches = |start: u16| {
        (0..iterations.min(0x10000)).any(|k| {
            let off = if down {
                start.wrapping_sub((2 * k) as u16)
            } else {
                start.wrapping_add((2 * k) as u16)
            };
            off == 0xFFFF
        })
    };
    (uses_si && reaches(r.si.unwrap_or(0))) || (uses_di && reaches(r.di.unwrap_or(0)))
}

/// The flags this test may not compare: the instruction's undefined flags
/// and, where FLAGS is loaded from memory, bits 12-15.
fn flag_mask(t: &Test, insn: &iced_x86::Instruction) -> u32 {
    let m = insn.mnemonic();
    let count = match t.bytes.iter().find(|&&b| !is_prefix(b)).copied() {
        Some(0xD0) | Some(0xD1) => Some(1),
        Some(0xD2) | Some(0xD3) => Some(t.initial.regs.cx.unwrap_or(0) as u32 & 0x1F),
        Some(0xC0) | Some(0xC1) => Some(insn.immediate8() as u32 & 0x1F),
        _ => None,
    };
    let mut undefined = undefined_flags(m, count);
    if matches!(m, Mnemonic::Popf | Mnemonic::Iret) {
        undefined |= 0xF000;
    }
    undefined
}

fn is_prefix(b: u8) -> bool {
    matches!(b, 0x26 | 0x2E | 0x36 | 0x3E | 0xF0 | 0xF2 | 0xF3)
}

fn compare(t: &Test, insn: &iced_x86::Instruction, m: &mut Machine) -> Verdict {
    let init = &t.initial.regs;
    let fin = &t.final_.regs;
    let mut diffs = Vec::new();
    let mut check = |name: &str, expect: Option<u16>, initial: Option<u16>, got: u32| {
        let e = expect.or(initial).unwrap_or(0) as u32;
        if e != got & 0xFFFF {
            diffs.push(format!(
                "{name}: expected {e:04x}, got {:04x}",
                got & 0xFFFF
            ));
        }
    };
    let c = &m.cpu;
    check("ax", fin.ax, init.ax, c.gpr[reg::EAX]);
    check("bx", fin.bx, init.bx, c.gpr[reg::EBX]);
    check("cx", fin.cx, init.cx, c.gpr[reg::ECX]);
    check("dx", fin.dx, init.dx, c.gpr[reg::EDX]);
    check("sp", fin.sp, init.sp, c.gpr[reg::ESP]);
    check("bp", fin.bp, init.bp, c.gpr[reg::EBP]);
    check("si", fin.si, init.si, c.gpr[reg::ESI]);
    check("di", fin.di, init.di, c.gpr[reg::EDI]);
    check(
        "cs",
        fin.cs,
        init.cs,
        c.seg[SegReg::Cs as usize].selector as u32,
    );
    check(
        "ss",
        fin.ss,
        init.ss,
        c.seg[SegReg::Ss as usize].selector as u32,
    );
    check(
        "ds",
        fin.ds,
        init.ds,
        c.seg[SegReg::Ds as usize].selector as u32,
    );
    check(
        "es",
        fin.es,
        init.es,
        c.seg[SegReg::Es as usize].selector as u32,
    );
    check("ip", fin.ip, init.ip, c.eip);
    let mask = flag_mask(t, insn);
    let expect_flags = fin.flags.or(init.flags).unwrap_or(0) as u32 & !mask & 0xFFFF;
    let expect_flags = if fin.flags.is_none() {
        expect_flags & 0x0FFF
    } else {
        expect_flags
    };
    let got_flags = c.eflags & !mask & 0xFFFF;
    if expect_flags | FIXED1 != got_flags | FIXED1 {
        diffs.push(format!(
            "flags: expected {expect_flags:04x}, got {got_flags:04x} (mask {mask:04x})"
        ));
    }
    // Where the exception pushed FLAGS: the `flag_address` field is
    // sometimes one byte low in this data set (it is rounded down to even
    // when SP is odd), so the runner computes the slot from SS:SP itself.
    let flag_addr = t.exception.as_ref().map(|_| {
        let ss = init.ss.unwrap_or(0) as u32;
        let sp = init.sp.unwrap_or(0).wrapping_sub(2) as u32;
        (ss << 4) + sp
    });
    for &(addr, byte) in &t.final_.ram {
        let mut got = [0u8];
        let _ = m.mem().read_ram(addr & 0xFF_FFFF, &mut got);
        let byte_mask = match flag_addr {
            Some(fa) if addr == fa => !(mask as u8),
            Some(fa) if addr == fa + 1 => !((mask >> 8) as u8) & 0x0F,
            _ => 0xFF,
        };
        if got[0] & byte_mask != byte & byte_mask {
            diffs.push(format!(
                "ram[{addr:05x}]: expected {byte:02x}, got {:02x}",
                got[0]
            ));
        }
    }
    if diffs.is_empty() {
        Verdict::Passed
    } else {
        Verdict::Failed(diffs.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(name: &str, text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("ringside-sst-{}-{name}.json", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    const REGS: &str = r#"{"ax":1,"bx":0,"cx":0,"dx":0,"cs":0,"ss":0,"ds":0,"es":0,"sp":0,"bp":0,"si":0,"di":0,"ip":256,"flags":2}"#;

    fn test_json(regs: &str) -> String {
        format!(
            r#"[{{"idx":0,"name":"nop","bytes":[144],"initial":{{"regs":{regs},"ram":[[256,144]]}},"final":{{"regs":{{"ip":257}},"ram":[]}},"hash":"x"}}]"#
        )
    }

    #[test]
    fn a_file_in_the_format_loads_with_its_known_extra_keys() {
        let path = write_file("ok", &test_json(REGS));
        let tests = load_tests(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(tests.map(|t| t.len()).ok(), Some(1));
    }

    #[test]
    fn a_file_with_unknown_keys_is_refused_naming_the_key() {
        let path = write_file("eax", &test_json(&REGS.replace("\"ax\"", "\"eax\"")));
        let err = load_tests(&path).err().expect("refused");
        let _ = std::fs::remove_file(&path);
        assert!(err.to_string().contains("unknown field `eax`"), "{err}");
    }

    #[test]
    fn mov_with_fs_or_gs_is_excluded_with_its_reason() {
        let path = write_file("fs", &test_json(REGS));
        let t = load_tests(&path).unwrap().pop().unwrap();
        let _ = std::fs::remove_file(&path);
        for bytes in [[0x8Eu8, 0xE0], [0x8C, 0xE8]] {
            let insn = Decoder::new(16, &bytes, DecoderOptions::NONE).decode();
            assert!(
                excluded(&t, &insn).is_some_and(|r| r.contains("FS or GS")),
                "{bytes:02x?}"
            );
        }
        let ds = Decoder::new(16, &[0x8E, 0xD8], DecoderOptions::NONE).decode();
        assert_eq!(excluded(&t, &ds), None, "MOV DS stays in");
    }
}
