//! Admin API bodies: any JSON for any resource kind is validated (with every built-in plugin's
//! schema) or refused, never a panic.
#![no_main]

use ferry_config::Kind;
use ferry_core::plugin::Registry;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| ferry_plugins::builtin(Default::default(), Default::default()))
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let kinds = Kind::ALL;
    let kind = kinds[usize::from(data[0]) % kinds.len()];
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data[1..]) else {
        return;
    };
    let _ = ferry_config::resource::validate(kind, &v, registry());
});
