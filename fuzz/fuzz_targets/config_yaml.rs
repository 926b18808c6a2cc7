//! `config.yaml` loading: any text loads or gives an error, never a panic.
#![no_main]

use ferry_config::AppConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = AppConfig::parse(text);
    let _ = ferry_config::app::substitute_env(text, |_| None);
});
