//! The saved-state reader: bytes framed as a state file (magic, version,
//! length and a correct CRC, so that the fuzzer reaches the JSON, the
//! configuration and the RAM section behind the checksum; with the first
//! byte odd, the bytes as they are, frame included). A state that parses is
//! restored into a machine built from its configuration (disks left out:
//! a forged state never opens host files here) and run for a while on the
//! interpreter.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringside_core::snapshot::{self, FORMAT_VERSION, MAGIC};
use ringside_devices::pc::{build_pc, HostIo};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 1 == 1 {
        payload.to_vec()
    } else {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        b.extend_from_slice(payload);
        b
    };
    let Ok(state) = snapshot::from_bytes(&bytes) else {
        return;
    };
    let mut config = state.config().clone();
    if config.machine.memory_mib > 16 {
        return;
    }
    config.disks.clear();
    let Ok(mut m) = build_pc(&config, HostIo::discarded()) else {
        return;
    };
    if state.restore_into(&mut m).is_ok() {
        let _ = ringside_fuzz::run_checked(&mut m, &mut *ringside_fuzz::interp());
    }
});
