//! ringside-core: the machine model every engine shares, and the engine
//! contract.
//!
//! It owns the architectural CPU state ([`cpu::CpuState`]), guest memory on
//! `vm-memory` ([`memory`]), paging and the software TLB ([`mmu`]),
//! segmentation, event delivery and task switching ([`cpu`]), the port and
//! MMIO buses ([`bus`]), what passes to and from the host ([`hostio`]), virtual time ([`time`]), boot loaders ([`boot`]), system reset ([`reset`]),
//! saved-state files ([`snapshot`]) and the [`engine::Engine`] trait. It
//! does not execute instructions: that is the engines' job (engines/interp
//! first).
//!
//! Start reading at [`machine::Machine`], then [`cpu::state`], then [`mmu`].

pub mod abi;
pub mod boot;
pub mod bus;
pub mod config;
pub mod cpu;
pub mod engine;
pub mod exec;
pub mod hostio;
pub mod input_file;
pub mod machine;
pub mod memory;
pub mod mmu;
pub mod reset;
pub mod snapshot;
pub mod substrate;
pub mod time;

pub use engine::{run_by_steps, Budget, Engine, EngineError, EngineStats, Exit, StopReason};
pub use machine::{Machine, RunOutcome};
