// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Announcing the guest's MAC on a tap after go-live, so that the LAN's
//! bridges learn its new port: a RARP "reverse request" from the guest's
//! MAC to the broadcast address, as QEMU and Cloud Hypervisor send after a
//! migration. The guest's IP addresses are not known to the VMM, so the
//! protocol addresses are zero; the bridges learn from the source MAC.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::tap::VNET_HDR_LEN;

/// Length of the announcement frame: the Ethernet minimum without FCS.
pub const RARP_FRAME_LEN: usize = 60;
/// Ethertype of RARP.
pub const ETH_P_RARP: u16 = 0x8035;
/// RARP operation "reverse request".
pub const RARP_OP_REQUEST_REVERSE: u16 = 3;
/// How many times the announcement is sent (the first at once).
pub const ANNOUNCE_COUNT: usize = 3;
/// Time between two announcements.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(50);

/// The RARP announcement of `mac`: broadcast destination, source `mac`,
/// hardware type Ethernet, protocol IPv4, operation 3, sender and target
/// hardware addresses `mac`, protocol addresses zero, padded with zeroes.
pub fn rarp_frame(mac: [u8; 6]) -> [u8; RARP_FRAME_LEN] {
    let mut f = [0u8; RARP_FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_RARP.to_be_bytes());
    // htype 1 (Ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4.
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&RARP_OP_REQUEST_REVERSE.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    // Sender protocol address 0 at 28..32.
    f[32..38].copy_from_slice(&mac);
    // Target protocol address 0 at 38..42, then padding.
    f
}

/// Writes the announcement of `mac` once to `tap` (behind a zeroed
/// virtio-net header, as the tap expects).
pub fn announce_once(tap: &File, mac: [u8; 6]) -> std::io::Result<()> {
    let mut buf = [0u8; VNET_HDR_LEN + RARP_FRAME_LEN];
    buf[VNET_HDR_LEN..].copy_from_slice(&rarp_frame(mac));
    let n = (&*tap).write(&buf)?;
    if n != buf.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short tap write: {n} of {} bytes", buf.len()),
        ));
    }
    Ok(())
}

/// Sends the remaining `ANNOUNCE_COUNT - 1` announcements from a thread of
/// their own, [`ANNOUNCE_INTERVAL`] apart (the caller sent the first).
pub fn repeat_announcements(id: &str, tap: Arc<File>, mac: [u8; 6]) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("{id}-announce"))
        .spawn(move || {
            for _ in 1..ANNOUNCE_COUNT {
                std::thread::sleep(ANNOUNCE_INTERVAL);
                if let Err(e) = announce_once(&tap, mac) {
                    log::warn!("announcing the guest's MAC failed: {e}");
                }
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_byte_by_byte() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        let f = rarp_frame(mac);
        let mut want = Vec::new();
        want.extend_from_slice(&[0xff; 6]); // destination: broadcast
        want.extend_from_slice(&mac); // source: the guest
        want.extend_from_slice(&[0x80, 0x35]); // RARP
        want.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]); // Ethernet, IPv4
        want.extend_from_slice(&[0x00, 0x03]); // reverse request
        want.extend_from_slice(&mac); // sender hardware address
        want.extend_from_slice(&[0; 4]); // sender protocol address
        want.extend_from_slice(&mac); // target hardware address
        want.extend_from_slice(&[0; 4]); // target protocol address
        want.resize(60, 0); // padding to the Ethernet minimum
        assert_eq!(&f[..], &want[..]);
    }
}
