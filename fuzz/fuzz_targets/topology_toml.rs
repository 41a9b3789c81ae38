#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::topology_toml(data));
