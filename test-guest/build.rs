//! Relinks the guest when its linker script changes (scripts/build-test-guest
//! passes it to the linker; cargo does not track link arguments' files).

fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
}
