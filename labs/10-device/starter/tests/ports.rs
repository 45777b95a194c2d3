//! The device alone on a bus, driven through its ports as a guest would
//! drive it, with virtual time moved by hand. Given: these are what the
//! checker runs (`cargo test`); add your own beside them.

use ringside_core::bus::Device;
use ringside_core::Machine;
use serde_json::json;

use lab10_device::*;

fn machine() -> Machine {
    let mut m = Machine::with_ram_mib(1).unwrap();
    m.add_port_device(Box::new(Hasher::new()), &[HASH_PORTS]);
    m
}

fn feed(m: &mut Machine, bytes: &[u8], now: u64) {
    for &b in bytes {
        m.bus.io_write(DATA, 1, b.into(), now);
    }
}

#[test]
fn fnv1a_matches_the_published_values() {
    assert_eq!(fnv1a(b""), 0x811C9DC5);
    assert_eq!(fnv1a(b"a"), 0xE40C292C);
    assert_eq!(fnv1a(b"foobar"), 0xBF9CF968);
}

#[test]
fn start_is_busy_for_100_ns_plus_10_per_byte_then_done_with_irq_5() {
    let mut m = machine();
    feed(&mut m, b"hello", 0);
    m.bus.io_write(CMD, 1, CMD_START, 1_000);
    assert_eq!(m.bus.io_read(CMD, 1, 1_000) & 0xFF, STATUS_BUSY);
    assert_eq!(m.bus.next_deadline(), 1_000 + 100 + 5 * 10);
    m.bus.run_timers(1_149);
    assert!(!m.bus.irq_level(HASH_IRQ));
    m.bus.run_timers(1_150);
    assert!(m.bus.irq_level(HASH_IRQ));
    assert_eq!(m.bus.io_read(CMD, 1, 1_150) & 0xFF, STATUS_DONE);
}

#[test]
fn reading_result_gives_the_hash_and_acknowledges() {
    let mut m = machine();
    feed(&mut m, b"hello", 0);
    m.bus.io_write(CMD, 1, CMD_START, 0);
    m.bus.run_timers(150);
    assert_eq!(m.bus.io_read(RESULT, 4, 150), fnv1a(b"hello"));
    assert!(!m.bus.irq_level(HASH_IRQ));
    assert_eq!(m.bus.io_read(CMD, 1, 150) & 0xFF, 0);
    // The input was forgotten: the next hash starts afresh.
    feed(&mut m, b"a", 200);
    m.bus.io_write(CMD, 1, CMD_START, 200);
    m.bus.run_timers(310);
    assert_eq!(m.bus.io_read(RESULT, 4, 310), 0xE40C292C);
}

#[test]
fn data_written_while_busy_is_ignored() {
    let mut m = machine();
    feed(&mut m, b"a", 0);
    m.bus.io_write(CMD, 1, CMD_START, 0);
    feed(&mut m, b"bc", 50);
    m.bus.io_write(CMD, 1, CMD_START, 60); // a second START while busy: ignored
    assert_eq!(m.bus.next_deadline(), 110);
    m.bus.run_timers(110);
    assert_eq!(m.bus.io_read(RESULT, 4, 110), fnv1a(b"a"));
}

#[test]
fn reset_forgets_everything_cancels_the_work_and_lowers_the_irq() {
    let mut m = machine();
    feed(&mut m, b"xyz", 0);
    m.bus.io_write(CMD, 1, CMD_START, 0);
    m.bus.run_timers(130);
    assert!(m.bus.irq_level(HASH_IRQ));
    m.bus.io_write(CMD, 1, CMD_RESET, 140);
    assert!(!m.bus.irq_level(HASH_IRQ));
    assert_eq!(m.bus.io_read(CMD, 1, 140) & 0xFF, 0);
    // A reset while busy cancels the work: no interrupt comes.
    feed(&mut m, b"q", 150);
    m.bus.io_write(CMD, 1, CMD_START, 150);
    m.bus.io_write(CMD, 1, CMD_RESET, 160);
    assert_eq!(m.bus.next_deadline(), u64::MAX);
    // And the empty input hashes to the offset basis.
    m.bus.io_write(CMD, 1, CMD_START, 200);
    m.bus.run_timers(300);
    assert_eq!(m.bus.io_read(RESULT, 4, 300), 0x811C9DC5);
}

#[test]
fn ports_nobody_answers_read_as_all_ones() {
    let mut m = machine();
    assert_eq!(m.bus.io_read(DATA, 1, 0), 0xFF);
    assert_eq!(m.bus.io_read(0x312, 1, 0), 0xFF);
    assert_eq!(m.bus.io_read(0x316, 2, 0), 0xFFFF);
}

#[test]
fn start_while_done_lowers_the_line_so_the_next_completion_is_an_edge() {
    let mut m = machine();
    m.bus.io_write(CMD, 1, CMD_START, 0);
    m.bus.run_timers(100);
    assert!(m.bus.irq_level(HASH_IRQ));
    // RESULT not read: a new START drops it.
    m.bus.io_write(CMD, 1, CMD_START, 200);
    assert!(!m.bus.irq_level(HASH_IRQ));
    assert_eq!(m.bus.io_read(CMD, 1, 200) & 0xFF, STATUS_BUSY);
    m.bus.run_timers(300);
    assert!(m.bus.irq_level(HASH_IRQ));
}

#[test]
fn the_input_stops_growing_at_max_input() {
    let mut m = machine();
    for i in 0..MAX_INPUT + 100 {
        m.bus.io_write(DATA, 1, (i % 251) as u32, 0);
    }
    m.bus.io_write(CMD, 1, CMD_START, 0);
    assert_eq!(m.bus.next_deadline(), 100 + 10 * MAX_INPUT as u64);
    let kept: Vec<u8> = (0..MAX_INPUT).map(|i| (i % 251) as u8).collect();
    m.bus.run_timers(100 + 10 * MAX_INPUT as u64);
    assert_eq!(
        m.bus.io_read(RESULT, 4, 100 + 10 * MAX_INPUT as u64),
        fnv1a(&kept)
    );
}

#[test]
fn a_restored_state_answers_as_the_saved_device_did() {
    // Saved while DONE, with a result not read yet...
    let mut a = Machine::with_ram_mib(1).unwrap();
    let saved_id = a.add_port_device(Box::new(Hasher::new()), &[HASH_PORTS]);
    feed(&mut a, b"ringside", 0);
    a.bus.io_write(CMD, 1, CMD_START, 0);
    a.bus.run_timers(180);
    let saved = a.bus.device_mut(saved_id).unwrap().save_state();
    // ... and restored into a fresh device on another bus.
    let mut b = Machine::with_ram_mib(1).unwrap();
    let fresh = b.add_port_device(Box::new(Hasher::new()), &[HASH_PORTS]);
    b.bus
        .device_mut(fresh)
        .unwrap()
        .restore_state(&saved)
        .unwrap();
    assert_eq!(b.bus.io_read(CMD, 1, 0) & 0xFF, STATUS_DONE);
    assert_eq!(b.bus.io_read(RESULT, 4, 0), fnv1a(b"ringside"));
    assert_eq!(b.bus.io_read(CMD, 1, 0) & 0xFF, 0);
}

#[test]
fn saved_state_round_trips_and_a_wrong_one_is_refused() {
    let mut a = Hasher::new();
    let saved_empty = a.save_state();
    // A device on a bus, given some input, then saved.
    let mut m = Machine::with_ram_mib(1).unwrap();
    let id = m.add_port_device(Box::new(Hasher::new()), &[HASH_PORTS]);
    feed(&mut m, b"he", 0);
    let saved = m.bus.device_mut(id).unwrap().save_state();
    assert_ne!(saved, saved_empty, "the input must be in the saved state");
    a.restore_state(&saved).unwrap();
    assert_eq!(a.save_state(), saved);
    assert!(a.restore_state(&json!({ "version": 999 })).is_err());
    assert!(a.restore_state(&json!("nonsense")).is_err());
    assert_eq!(a.save_state(), saved, "a refused state changes nothing");
}
