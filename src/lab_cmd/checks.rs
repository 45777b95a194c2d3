//! What each lab's checker looks for in a run, and the hints it gives
//! (one function per lab, named after it).

use super::{Run, Verdict};

/// What every lab says about a run that ended the wrong way.
fn ending(run: &Run, wanted: i32, problems: &mut Verdict) {
    let said = match run.said.trim() {
        "" => String::new(),
        said => format!(". ringside said: {said}"),
    };
    match run.status {
        Some(s) if s == wanted => {}
        Some(124) => problems.push(
            "the guest was still running after the instruction limit: a loop that never ends?"
                .into(),
        ),
        Some(125) => problems.push(format!(
            "the CPU shut down (a triple fault: an exception with no working handler){said}"
        )),
        Some(s) => problems.push(format!("the run ended with status {s}, not {wanted}{said}")),
        None => problems.push("ringside ended by a signal".into()),
    }
}

pub(super) fn check_boot_sector(run: &Run) -> Verdict {
    let mut p = Vec::new();
    if !run.com1.contains("Hello from my boot sector!") {
        p.push(
            "COM1 did not show \"Hello from my boot sector!\": print each character of the message with INT 10h, AH = 0Eh (ringside's BIOS copies the screen's teletype output to COM1)"
                .into(),
        );
    }
    ending(run, 0, &mut p);
    p
}

pub(super) fn check_protected_mode(run: &Run) -> Verdict {
    let mut p = Vec::new();
    if run.status == Some(1) {
        p.push("the run ended with status 1: the lines that end it while TODO 2 is not done are still there".into());
        return p;
    }
    if !run.com1.contains("protected mode!") {
        p.push("COM1 did not show \"protected mode!\": the 32-bit code did not run (check the GDT's code descriptor, CR0.PE and the far jump)".into());
    }
    if !run.com1.contains("#GP, error code 0") {
        p.push("the #GP handler did not report the limit violation: check the IDT gate for vector 13 (present, interrupt gate, CODE:gp_handler) and the 4 KiB data segment at 18h".into());
    }
    ending(run, 13, &mut p);
    p
}

pub(super) fn check_paging(run: &Run) -> Verdict {
    let mut p = Vec::new();
    if !run.com1.contains("page faults: 8\n") {
        p.push(format!(
            "the kernel counted {} page faults, not 8: each of the 8 pages at DEMAND must fault once (paging on, their entries not present at first) and be mapped by the handler",
            run.com1
                .lines()
                .find_map(|l| l.strip_prefix("page faults: "))
                .unwrap_or("no")
        ));
    }
    if !run.com1.contains("sum: 36\n") {
        p.push("the sum of the values read back is not 36: a page that was written must be there when read (map each page to its own frame)".into());
    }
    // The kernel's own count must be the CPU's: ringside counted the
    // exceptions it delivered.
    let delivered = run.counter("exceptions");
    if delivered != 8 {
        p.push(format!(
            "ringside delivered {delivered} exceptions, not 8 (one #PF per page): see them with `ringside debug` and `catch vector 14`"
        ));
    }
    ending(run, 0, &mut p);
    p
}

pub(super) fn check_interrupts(run: &Run) -> Verdict {
    let mut p = Vec::new();
    if !run.com1.contains("ticks: 50\n") {
        p.push(if run.said.contains("no device in this machine raises one") {
            "the CPU halted with nothing to wake it: the PIT is not programmed, or IRQ 0 is masked at the PIC".into()
        } else {
            "COM1 did not show \"ticks: 50\": count a tick in timer_interrupt and send the PIC an end-of-interrupt".into()
        });
    }
    let delivered = run.counter("interrupts");
    if delivered < 50 {
        p.push(format!(
            "ringside delivered {delivered} interrupts; 50 timer ticks need at least 50"
        ));
    }
    ending(run, 0, &mut p);
    p
}

/// `key: value` from an answers file (comments and blanks skipped; the
/// value trimmed; `?` counts as no answer).
fn answer<'a>(answers: &'a str, key: &str) -> Option<&'a str> {
    answers
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == key))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && *v != "?")
}

pub(super) fn check_find_the_bug(run: &Run) -> Verdict {
    let mut p = Vec::new();
    // The truth, from the comparator's own report.
    let report = &run.com1;
    let first = report.lines().next().unwrap_or("");
    let Some(after) = first
        .strip_prefix("divergence after ")
        .and_then(|r| r.split_whitespace().next())
    else {
        p.push(format!(
            "ringside compare did not report a divergence (status {:?}): {}{}",
            run.status, report, run.said
        ));
        return p;
    };
    // "... at 0008:001020a6  42  inc edx": the mnemonic after the bytes.
    let mnemonic = first
        .split("  ")
        .nth(2)
        .and_then(|d| d.split_whitespace().next())
        .unwrap_or("");
    let flags: Vec<String> = report
        .lines()
        .find_map(|l| l.strip_prefix("* eflags"))
        .map(|v| {
            let vals: Vec<u32> = v
                .split_whitespace()
                .filter_map(|x| u32::from_str_radix(x, 16).ok())
                .collect();
            match vals.as_slice() {
                [a, b] => ringside_debugger::inspect::flag_names(a ^ b)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            }
        })
        .unwrap_or_default();
    let given = |key| answer(&run.answers, key);
    match given("instruction") {
        None => p.push("instruction: run the compare the file names and copy the number after \"divergence after\"".into()),
        Some(n) if n.replace(',', "") != after => p.push(format!(
            "instruction: {n} is not where the engines part (run the compare again, on builtin:bench-int)"
        )),
        Some(_) => {}
    }
    match given("mnemonic") {
        None => p.push(
            "mnemonic: the instruction's name is at the end of the report's first line".into(),
        ),
        Some(m) if !m.eq_ignore_ascii_case(mnemonic) => p.push(format!(
            "mnemonic: {m} is not the instruction at the divergence"
        )),
        Some(_) => {}
    }
    match given("flag") {
        None => p.push("flag: compare the two EFLAGS values the report shows, bit by bit (CF is bit 0, PF 2, AF 4, ZF 6, SF 7, OF 11)".into()),
        Some(f) if !flags.iter().any(|x| x.eq_ignore_ascii_case(f)) => p.push(format!(
            "flag: {f} is not a flag the two engines disagree on"
        )),
        Some(_) => {}
    }
    if given("rule").is_none() {
        p.push("rule: say which rule of the manual the broken engine breaks (the instruction's \"Flags Affected\" in SDM Vol. 2)".into());
    }
    p
}

/// An answer that must be the number `truth` (None: the probe did not
/// report it, which is ringside's failure, said as such).
fn numeric_answer(run: &Run, key: &str, truth: Option<u64>, hint: &str, p: &mut Verdict) {
    let Some(truth) = truth else {
        p.push(format!(
            "{key}: ringside did not report this counter; its output: {}",
            run.said.trim()
        ));
        return;
    };
    match answer(&run.answers, key) {
        None => p.push(format!("{key}: {hint}")),
        Some(v) if v.replace(',', "").parse::<u64>() != Ok(truth) => {
            p.push(format!("{key}: {v} is not what the run shows; {hint}"))
        }
        Some(_) => {}
    }
}

/// An answer in words: present, and a sentence (not a word or two).
fn sentence_answer(run: &Run, key: &str, hint: &str, p: &mut Verdict) {
    match answer(&run.answers, key) {
        Some(v) if v.split_whitespace().count() >= 6 => {}
        _ => p.push(format!("{key}: {hint}")),
    }
}

pub(super) fn check_raw_traps(run: &Run) -> Verdict {
    let mut p = Vec::new();
    let Some(raw) = run.probes.first() else {
        return vec!["the run on raw mode did not happen".into()];
    };
    let hint = "read it from the counters of the run the file names";
    numeric_answer(
        run,
        "gp_traps",
        raw.counter("raw.traps.0d-gp"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "out_emulated",
        raw.counter("raw.emulated.out"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "in_emulated",
        raw.counter("raw.emulated.in"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "substrate_instructions",
        raw.counter("raw.substrate_instructions"),
        hint,
        &mut p,
    );
    sentence_answer(
        run,
        "why",
        "explain in a sentence, with the CPL the kernel runs at under raw mode and the IOPL (the book's chapter on raw mode, SDM Vol. 1 19.5)",
        &mut p,
    );
    p
}

pub(super) fn check_csam_patm(run: &Run) -> Verdict {
    let mut p = Vec::new();
    let [with, without] = run.probes.as_slice() else {
        return vec!["the two runs on raw mode did not happen".into()];
    };
    let hint = "read it from the counters of the runs the file names";
    numeric_answer(
        run,
        "gp_traps_with_patm",
        with.counter("raw.traps.0d-gp"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "gp_traps_without_patm",
        without.counter("raw.traps.0d-gp"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "site_traps_without_patm",
        without.counter("raw.site_traps"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "live_patches",
        with.counter("raw.patm_live_patches"),
        hint,
        &mut p,
    );
    // The kind with the most installed patches.
    let most = with.stats["counters"].as_object().and_then(|c| {
        c.iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("raw.patm_installed.jump.")?, v.as_u64()?)))
            .max_by_key(|&(_, n)| n)
            .map(|(k, _)| k.to_string())
    });
    match (answer(&run.answers, "most_patched"), most) {
        (_, None) => p.push("most_patched: ringside reported no patches".into()),
        (None, Some(_)) => {
            p.push("most_patched: look at the raw.patm_installed.jump.* counters".into())
        }
        (Some(v), Some(m)) if !v.eq_ignore_ascii_case(&m) => p.push(format!(
            "most_patched: {v} is not the kind with the most patches"
        )),
        _ => {}
    }
    sentence_answer(
        run,
        "why",
        "explain in a sentence what a patch can do in place that the monitor must do for OUT and IN",
        &mut p,
    );
    p
}

pub(super) fn check_recompiler(run: &Run) -> Verdict {
    let mut p = Vec::new();
    let [dump, bench, smc] = run.probes.as_slice() else {
        return vec!["the three runs the lab names did not happen".into()];
    };
    // The guest block: the lines between the header and the blank line.
    let guest = dump
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("; guest block"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .count() as u64;
    let in_dump = (guest > 0).then_some(guest);
    numeric_answer(
        run,
        "guest_instructions",
        in_dump,
        "count the guest instructions jit-dump lists above the IR",
        &mut p,
    );
    // An opcode of the IR ("= ushr.i32 v1, v2"), the type suffix off.
    let opcodes: Vec<&str> = dump
        .stdout
        .lines()
        .filter_map(|l| l.split_once(" = ")?.1.split_whitespace().next())
        .map(|op| op.split('.').next().unwrap_or(op))
        .collect();
    match answer(&run.answers, "shr_becomes") {
        Some(op) if op.starts_with("ushr") && opcodes.contains(&op) => {}
        Some(op) if !opcodes.contains(&op) => p.push(format!(
            "shr_becomes: {op} does not appear in the block's IR"
        )),
        Some(op) => p.push(format!(
            "shr_becomes: {op} is in the IR, but it is not what a logical shift right becomes"
        )),
        None => p.push(
            "shr_becomes: find the IR instruction that shifts right without the sign (Cranelift's opcode list: ushr, sshr...)".into(),
        ),
    }
    let hint = "read it from the --stats counters of the run the file names";
    numeric_answer(
        run,
        "compiled_regions",
        bench.counter("compiled_blocks"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "chained_transitions",
        bench.counter("chained_translations"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "native_instructions",
        bench.counter("native_instructions"),
        hint,
        &mut p,
    );
    numeric_answer(
        run,
        "smc_invalidated",
        smc.counter("translations_invalidated"),
        hint,
        &mut p,
    );
    sentence_answer(
        run,
        "why",
        "explain in a sentence why a translation goes stale and how a write to its code is noticed (the recompiler's chapter, \"Code that writes code\")",
        &mut p,
    );
    p
}

pub(super) fn check_kvm_exits(run: &Run) -> Verdict {
    let mut p = Vec::new();
    let Some(kvm) = run.probes.first() else {
        return vec!["the run on kvm did not happen".into()];
    };
    if run.status != Some(0) {
        return vec![format!(
            "this host cannot run the lab's guest on kvm (ringside engines says what its KVM runs); do this lab on a host with KVM. ringside said: {}",
            kvm.stderr.trim()
        )];
    }
    let hint = "read it from the --stats counters of the run the file names";
    numeric_answer(run, "io_exits", kvm.counter("exits_io"), hint, &mut p);
    numeric_answer(run, "hlt_exits", kvm.counter("exits_hlt"), hint, &mut p);
    numeric_answer(
        run,
        "injected",
        kvm.counter("interrupts_injected"),
        hint,
        &mut p,
    );
    match answer(&run.answers, "varies") {
        Some(v) if v.trim() == "exits_kick" => {}
        Some(v) => p.push(format!(
            "varies: {v} is the same in every run; run the command a few times and compare each exits_* counter"
        )),
        None => p.push("varies: run the command a few times and compare each exits_* counter".into()),
    }
    sentence_answer(
        run,
        "why",
        "explain in a sentence what that exit is for and why its count depends on the host (the chapter \"Hardware virtualization\")",
        &mut p,
    );
    p
}

/// Lab 5: what `run lab` printed, line by line (user/lab.c), then that
/// the kernel still runs a program afterwards.
pub(super) fn check_system_call(run: &Run) -> Verdict {
    let mut p = Vec::new();
    let line = |prefix: &str| {
        run.com1
            .lines()
            .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix))
            .map(str::to_string)
    };
    let not_made = "the stub in user/ulib.c does not make the system call yet, or the kernel has no entry for its number in syscall.c's table";
    match line("count: ").as_deref() {
        None => p.push("the lab program did not print \"count: \": did `run lab` start it? (kernel/programs.S must list `PROGRAM lab`)".into()),
        Some("-1") => p.push(format!("count() returned -1: {not_made}")),
        Some("1") => {}
        Some(v) => p.push(format!(
            "count() returned {v} as the process's first system call, not 1: count in syscall() every call the process makes, this one included, starting from 0 when the process is made"
        )),
    }
    match line("count after two more calls: ").as_deref() {
        Some("4") | Some("-1") | None => {}
        Some(v) => p.push(format!(
            "after count, printf (one write) and write, count() returned {v}, not 4: every system call counts, whatever its number"
        )),
    }
    let wanted = [
        ("kname: ", "16 \"ringside demo OS\"", "kname(buf, 32) must copy the whole name and its NUL and return 16"),
        ("kname into 4 bytes: ", "16 \"rin\"", "with n = 4, kname copies 3 characters and a NUL (the name cut to fit) and still returns the name's length, 16"),
        ("kname into 0 bytes: ", "-1", "n <= 0 must give -1"),
        ("kname into the kernel: ", "-1", "a buffer in kernel memory (0x00100000, the kernel's code) must give -1: check it with user_range_ok(current, buf, n, 1) before writing"),
        ("kname into read-only code: ", "-1", "a buffer in the program's read-only code must give -1: user_range_ok's last argument asks for writable pages"),
        ("kname across the top of user space: ", "-1", "a buffer that runs past USER_STACK_TOP must give -1: check all n bytes, not only the first, nor only those the name needs"),
        ("kname at the top of memory: ", "-1", "a buffer at 0xfffffff0 must give -1 (buf + n wraps around 2^32)"),
    ];
    for (prefix, want, hint) in wanted {
        match line(prefix) {
            Some(got) if got == want => {}
            Some(got) if got.starts_with("-1") && want != "-1" => {
                p.push(format!("{prefix}{got}: {not_made}"))
            }
            Some(got) => p.push(format!("{prefix}{got}, not {want}: {hint}")),
            None if p.is_empty() => p.push(format!(
                "the lab program stopped before \"{}\": the kernel may have crashed on a bad pointer (see what ringside said: {})",
                prefix.trim_end_matches(": "),
                run.said.trim()
            )),
            None => {}
        }
    }
    if !run.com1.contains("Hello from user space!") {
        p.push("after the lab program, `run hello` did not print its greeting: the kernel did not survive the lab program (a write through a bad pointer?)".into());
    }
    ending(run, 0, &mut p);
    p
}

/// A crate lab's given tests: each must be there and pass (a test the
/// student deleted is a failure, not a pass).
fn given_tests(run: &Run, given: &[&str], p: &mut Verdict) {
    for name in given {
        match run.tests.iter().find(|(n, _)| n == name) {
            None => p.push(format!(
                "the given test {name} did not run: keep the tests the lab gives (add yours beside them)"
            )),
            Some((_, Some(message))) => p.push(format!("test {name} failed: {message}")),
            Some((_, None)) => {}
        }
    }
}

/// Lab 10: the device's given unit tests, then the guest's run.
pub(super) fn check_device(run: &Run) -> Verdict {
    let mut p = Vec::new();
    given_tests(
        run,
        &[
            "fnv1a_matches_the_published_values",
            "start_is_busy_for_100_ns_plus_10_per_byte_then_done_with_irq_5",
            "reading_result_gives_the_hash_and_acknowledges",
            "data_written_while_busy_is_ignored",
            "reset_forgets_everything_cancels_the_work_and_lowers_the_irq",
            "ports_nobody_answers_read_as_all_ones",
            "saved_state_round_trips_and_a_wrong_one_is_refused",
            "start_while_done_lowers_the_line_so_the_next_completion_is_an_edge",
            "the_input_stops_growing_at_max_input",
            "a_restored_state_answers_as_the_saved_device_did",
        ],
        &mut p,
    );
    let hashed = run.com1.lines().filter(|l| l.ends_with(" ok")).count();
    if hashed != 5 {
        // The guest's own words for the first string that went wrong.
        let first = run
            .com1
            .lines()
            .find(|l| !l.ends_with(" ok") && !l.starts_with("irqs: "))
            .unwrap_or("no output");
        p.push(format!(
            "the guest hashed {hashed} of its 5 strings through the device; it said: {first}"
        ));
    }
    match run.com1.lines().find_map(|l| l.strip_prefix("irqs: ")) {
        Some("5") => {}
        Some(n) if hashed == 5 => p.push(format!(
            "the guest took {n} interrupts for 5 hashes: raise IRQ 5 once per START, when the work is done"
        )),
        _ => {}
    }
    ending(run, 0, &mut p);
    p
}

/// The share of a lockstep run of bench-int-small a lab 12 engine must
/// run itself: the whole subset the lab asks for runs 67.6% of it (the
/// reference solution), so most of the subset must be there.
const ENGINE_OWN_SHARE: f64 = 50.0;

/// Lab 12: the engine's given lockstep tests, then a lockstep run of a
/// whole guest, and how much of it the engine ran itself.
pub(super) fn check_engine(run: &Run) -> Verdict {
    let mut p = Vec::new();
    given_tests(
        run,
        &[
            "mov_loads_immediates_and_registers",
            "add_and_sub_set_all_six_status_flags",
            "cmp_sets_flags_and_keeps_its_operands",
            "logic_clears_cf_and_of_and_sets_sf_zf_pf",
            "inc_and_dec_keep_cf",
            "jumps_follow_every_condition_short_and_near",
            "a_counted_loop_runs_to_the_end",
            "loop_instructions_are_left_to_the_interpreter",
            "a_timer_that_comes_due_in_a_register_loop_fires_at_the_same_instruction",
        ],
        &mut p,
    );
    if !run.com1.contains("lockstep: interp and mine agree on all") {
        let report: Vec<&str> = run.com1.lines().take(8).collect();
        p.push(format!(
            "on bench-int-small, your engine and the interpreter do not agree to the end:\n    {}",
            if report.is_empty() {
                run.said.trim().to_string()
            } else {
                report.join("\n    ")
            }
        ));
    }
    let share = run
        .com1
        .lines()
        .find_map(|l| l.strip_prefix("mine ran "))
        .and_then(|l| l.split_once('(')?.1.strip_suffix("%)")?.parse::<f64>().ok());
    match share {
        Some(s) if s >= ENGINE_OWN_SHARE => {}
        Some(s) => p.push(format!(
            "your engine ran {s:.1}% of bench-int-small's instructions itself; the subset the lab asks for is at least {ENGINE_OWN_SHARE}%"
        )),
        // (After a divergence the run says only where: reported above.)
        None if run.com1.contains("lockstep: interp and mine agree on all") => p.push(
            "the run did not say how much of bench-int-small your engine ran itself (the \"mine ran\" line of src/main.rs)".into(),
        ),
        None => {}
    }
    ending(run, 0, &mut p);
    p
}
