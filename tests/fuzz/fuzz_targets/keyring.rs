#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pullguard::fuzzing::keyring(data));
