//! The machine configuration: any text parses to a configuration or a
//! clear error; a configuration that validates prints to TOML that parses
//! back to itself; `--set KEY=VALUE` pairs (the input's last lines) change
//! it or are refused, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringside_core::config::MachineConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml, sets) = text.split_once("\n--set\n").unwrap_or((text, ""));
    let Ok(mut c) = MachineConfig::from_toml(toml) else {
        return;
    };
    if c.validate().is_ok() {
        let again = MachineConfig::from_toml(&c.to_toml()).expect("printed TOML parses");
        assert_eq!(again, c, "the configuration changed through TOML");
    }
    for line in sets.lines() {
        if let Some((key, value)) = line.split_once('=') {
            let _ = c.set(key, value);
        }
    }
    let _ = c.validate();
});
