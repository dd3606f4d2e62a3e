//! Temporary probe (not committed).
use zstd::stream::raw::{CParameter, Encoder, InBuffer, Operation, OutBuffer};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let wlog: u32 = std::env::args().nth(2).unwrap().parse().unwrap();
    let ldm: bool = std::env::args().nth(3).unwrap() == "1";
    let flush: bool = std::env::args().nth(4).unwrap() == "1";
    let level: i32 = std::env::args().nth(5).unwrap().parse().unwrap();
    let data = std::fs::read(&path).unwrap();
    let mut pos = 32;
    let mut frames = Vec::new();
    while pos + 4 <= data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        frames.push(&data[pos + 5..pos + 4 + len]);
        pos += len + 8;
    }
    let t = std::time::Instant::now();
    let mut e = Encoder::new(level).unwrap();
    e.set_parameter(CParameter::WindowLog(wlog)).unwrap();
    e.set_parameter(CParameter::EnableLongDistanceMatching(ldm))
        .unwrap();
    let mut total = 0usize;
    let mut out: Vec<u8> = Vec::with_capacity(64 << 20);
    for f in &frames {
        out.clear();
        let mut i = InBuffer::around(f);
        while i.pos() < f.len() {
            let l = out.len();
            let mut o = OutBuffer::around_pos(&mut out, l);
            e.run(&mut i, &mut o).unwrap();
        }
        if flush {
            loop {
                let l = out.len();
                let mut o = OutBuffer::around_pos(&mut out, l);
                if e.flush(&mut o).unwrap() == 0 {
                    break;
                }
            }
        }
        total += out.len();
    }
    out.clear();
    let l = out.len();
    let mut o = OutBuffer::around_pos(&mut out, l);
    e.finish(&mut o, true).unwrap();
    total += out.len();
    println!(
        "w{wlog} ldm{ldm} flush{flush} l{level}: {} frames, {} raw -> {} ({:?})",
        frames.len(),
        data.len(),
        total,
        t.elapsed()
    );
}
