//! Per-request cost of choosing an instance or node (`ferry_core::pick`): smooth weighted
//! round robin over 2 and 8 members (one skipped, as after a failure or an ejection), and a
//! consistent-hash lookup. Run: `cargo bench -p ferry-core --bench pick`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use divan::{Bencher, black_box};
use ferry_core::pick::{Algorithm, Member, Picker};

fn main() {
    divan::main();
}

fn picker(n: usize, algorithm: Algorithm) -> Picker {
    let members: Vec<Member> = (0..n)
        .map(|i| Member {
            id: format!("instance-{i}"),
            weight: 1 + (i as u32 % 3),
            priority: 0,
        })
        .collect();
    Picker::new(&members, algorithm, true)
}

#[divan::bench(args = [2, 8])]
fn round_robin(b: Bencher, n: usize) {
    let p = picker(n, Algorithm::RoundRobin);
    b.bench(|| p.pick(|_| false, None));
}

#[divan::bench(args = [2, 8])]
fn round_robin_one_skipped(b: Bencher, n: usize) {
    let p = picker(n, Algorithm::RoundRobin);
    b.bench(|| p.pick(|i| i == 0, None));
}

#[divan::bench(args = [2, 8])]
fn chash(b: Bencher, n: usize) {
    let p = picker(n, Algorithm::Chash);
    let key = black_box(b"user-8f3a2c91d0".as_slice());
    b.bench(|| p.pick(|_| false, Some(key)));
}
