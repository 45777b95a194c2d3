//! From a unit of guest blocks to host code bytes, on the engine's thread
//! or on the background compiler's.
//!
//! A [`Unit`] owns everything its code will point at: the decoded
//! instructions (helper calls pass their addresses) and the link slots
//! (exits return their addresses). [`codegen`] builds the IR and has
//! Cranelift compile it to position-independent bytes — every address the
//! code holds is an absolute constant, so it needs no relocation and can
//! be placed anywhere; the tier then copies the bytes into its code
//! memory (`Recompiler::finish`). That split is what lets a [`Worker`]
//! thread compile while the guest runs on: only the install, a copy,
//! happens on the engine's thread, at an instruction boundary.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use cranelift_codegen::ir::{types, AbiParam, InstBuilder, Signature};
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa, TargetIsa};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use ringside_interp::exec::Decoded;

use crate::frame::LinkSlot;
use crate::translate::{Mode, Shape};

/// The link slots of one unit: allocated with the unit, owned by its
/// generation once installed (freed at a flush).
pub struct Slots(*mut [LinkSlot]);

// SAFETY: the slots are plain data; the unit that owns them is used by
// one thread at a time (the worker while it compiles, the engine after).
unsafe impl Send for Slots {}

impl Slots {
    pub fn into_raw(self) -> *mut [LinkSlot] {
        let p = self.0;
        std::mem::forget(self);
        p
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `Unit::new`, and not handed
        // on (`into_raw` forgets the wrapper).
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// Guest blocks to compile as one function (the first is the entry), for
/// one mode.
pub struct Unit {
    pub blocks: Vec<(u32, Box<[Decoded]>)>,
    pub slots: Slots,
    pub mode: Mode,
    /// When every block of the unit lies in one physical page (no block
    /// runs onto the next), that page and the interpreter's blocks
    /// generation the unit was formed in: its other blocks may then be
    /// entered through it while that generation lasts
    /// (`Recompiler::entries`).
    pub one_page: Option<(u32, u64)>,
}

impl Unit {
    pub fn new(blocks: Vec<(u32, Vec<Decoded>)>, mode: Mode) -> Unit {
        let blocks: Vec<(u32, Box<[Decoded]>)> = blocks
            .into_iter()
            .map(|(eip, insns)| (eip, insns.into_boxed_slice()))
            .collect();
        // At most one fixed exit per instruction and one per block end.
        let exits = blocks.iter().map(|(_, i)| i.len() + 1).sum::<usize>();
        let slots = Slots(Box::into_raw(
            vec![LinkSlot::default(); exits].into_boxed_slice(),
        ));
        Unit {
            blocks,
            slots,
            mode,
            one_page: None,
        }
    }

    pub fn first_eip(&self) -> u32 {
        self.blocks.first().map_or(0, |(eip, _)| *eip)
    }
}

/// CPU time this thread has used, in nanoseconds: what a compile costs
/// is measured in it, so that the figure does not grow when the machine
/// is busy and the compiling thread waits for a core.
fn cpu_nanos() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A unit compiled to host code.
pub struct Compiled {
    pub code: Vec<u8>,
    pub alignment: u64,
    pub shape: Shape,
    /// The IR, when asked for (`jit-dump`).
    pub ir: Option<String>,
    /// CPU time spent building and compiling.
    pub nanos: u64,
}

/// The signature of a translation: the frame in, a link slot or null
/// out, in the `tail` calling convention (one translation may end with a
/// tail call of the next).
pub fn entry_signature(isa: &dyn TargetIsa) -> Signature {
    let ptr = isa.pointer_type();
    let mut sig = Signature::new(CallConv::Tail);
    sig.params.push(AbiParam::new(ptr));
    sig.returns.push(AbiParam::new(ptr));
    sig
}

/// The signature of the trampoline (`frame::Trampoline`): the frame and a
/// translation's entry in, what the translation returns out, in `isa`'s
/// default (the host's C) calling convention.
pub fn trampoline_signature(isa: &dyn TargetIsa) -> Signature {
    let ptr = isa.pointer_type();
    let mut sig = Signature::new(isa.default_call_conv());
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(ptr));
    sig.returns.push(AbiParam::new(ptr));
    sig
}

/// Build and compile the trampoline.
pub fn trampoline(
    isa: &dyn TargetIsa,
    fctx: &mut FunctionBuilderContext,
) -> Result<Compiled, String> {
    let start = cpu_nanos();
    let mut ctx = Context::new();
    ctx.func.signature = trampoline_signature(isa);
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let sig = b.import_signature(entry_signature(isa));
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        let (frame, entry) = (b.block_params(block)[0], b.block_params(block)[1]);
        let call = b.ins().call_indirect(sig, entry, &[frame]);
        let r = b.inst_results(call)[0];
        b.ins().return_(&[r]);
        b.seal_all_blocks();
        b.finalize(isa.frontend_config());
    }
    let compiled = ctx
        .compile(isa, &mut Default::default())
        .map_err(|e| format!("compile: {:?}", e.inner))?;
    Ok(Compiled {
        code: compiled.code_buffer().to_vec(),
        alignment: compiled.buffer.alignment as u64,
        shape: Shape::default(),
        ir: None,
        nanos: cpu_nanos().saturating_sub(start),
    })
}

thread_local! {
    static CTX: std::cell::RefCell<Context> = std::cell::RefCell::new(Context::new());
}

/// Build `unit`'s IR and compile it.
pub fn codegen(
    isa: &dyn TargetIsa,
    fctx: &mut FunctionBuilderContext,
    unit: &mut Unit,
    keep_ir: bool,
) -> Result<Compiled, String> {
    CTX.with(|c| codegen_in(&mut c.borrow_mut(), isa, fctx, unit, keep_ir))
}

fn codegen_in(
    ctx: &mut Context,
    isa: &dyn TargetIsa,
    fctx: &mut FunctionBuilderContext,
    unit: &mut Unit,
    keep_ir: bool,
) -> Result<Compiled, String> {
    let start = cpu_nanos();
    let ptr = isa.pointer_type();
    ctx.clear();
    ctx.func.signature = entry_signature(isa);
    let shape = {
        let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
        let view: Vec<(u32, &[Decoded])> = unit.blocks.iter().map(|(e, i)| (*e, &i[..])).collect();
        // SAFETY: the unit owns the slots, and nothing else refers to them
        // while the translator hands out their addresses.
        let slots = unsafe { &mut *unit.slots.0 };
        let shape = crate::tier::translate_into(
            &mut b,
            &view,
            unit.mode,
            ptr,
            isa.default_call_conv(),
            slots,
        );
        b.seal_all_blocks();
        b.finalize(isa.frontend_config());
        shape
    };
    let _ = types::I32;
    let ir = keep_ir.then(|| ctx.func.display().to_string());
    let compiled = ctx
        .compile(isa, &mut Default::default())
        .map_err(|e| format!("compile: {:?}", e.inner))?;
    if !compiled.buffer.relocs().is_empty() {
        return Err("the code needs relocations (it must hold only absolute constants)".into());
    }
    Ok(Compiled {
        code: compiled.code_buffer().to_vec(),
        alignment: compiled.buffer.alignment as u64,
        shape,
        ir,
        nanos: cpu_nanos().saturating_sub(start),
    })
}

/// What the engine asks the worker to compile.
pub struct Job<K> {
    pub key: K,
    pub unit: Unit,
}

/// What comes back.
pub struct Done<K> {
    pub key: K,
    pub unit: Unit,
    pub result: Result<Compiled, String>,
}

/// The background compiler: one thread, fed and drained through
/// channels. Dropping it ends the thread (units still queued are freed).
pub struct Worker<K: Send + 'static> {
    tx: Option<Sender<Job<K>>>,
    rx: Receiver<Done<K>>,
    handle: Option<JoinHandle<()>>,
}

impl<K: Send + 'static> Worker<K> {
    pub fn start(isa: OwnedTargetIsa) -> Result<Worker<K>, String> {
        let (tx, jobs) = channel::<Job<K>>();
        let (done, rx) = channel::<Done<K>>();
        let handle = std::thread::Builder::new()
            .name("ringside-jit-compiler".into())
            .spawn(move || {
                let mut fctx = FunctionBuilderContext::new();
                while let Ok(Job { key, mut unit }) = jobs.recv() {
                    let result = codegen(&*isa, &mut fctx, &mut unit, false);
                    if done.send(Done { key, unit, result }).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start the compiler thread: {e}"))?;
        Ok(Worker {
            tx: Some(tx),
            rx,
            handle: Some(handle),
        })
    }

    /// Queue a job; false when the thread is gone.
    pub fn submit(&self, job: Job<K>) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// A finished job, if any (never waits).
    pub fn poll(&self) -> Option<Done<K>> {
        self.rx.try_recv().ok()
    }
}

impl<K: Send + 'static> Drop for Worker<K> {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
