// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! A Linux tap interface with virtio-net headers (`IFF_TAP | IFF_NO_PI |
//! IFF_VNET_HDR`, 12-byte header, no offloads), created if missing.
//!
//! An existing persistent tap (`ip tuntap add dev NAME mode tap`, with or
//! without `vnet_hdr`: the flags of whoever attaches replace those) is
//! attached to as it is; the kernel refuses an attach whose
//! `IFF_MULTI_QUEUE` differs from the tap's, so a tap created with
//! `multi_queue` is attached to with that flag (one queue of it).

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Size of the virtio-net header with VIRTIO_F_VERSION_1.
pub const VNET_HDR_LEN: usize = 12;

/// Errors opening or configuring a tap.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name does not fit an interface name.
    #[error("invalid tap name {0:?} (1 to 15 bytes, no '/', ':' or spaces)")]
    Name(String),
    /// `/dev/net/tun` cannot be opened.
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] std::io::Error),
    /// The kernel refused the interface (not a tap, busy, no permission).
    #[error("cannot attach to tap {name}")]
    SetIff {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Configuring the tap failed.
    #[error("cannot {what} on tap {name}")]
    Configure {
        /// What was being done.
        what: &'static str,
        /// The interface.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An open tap.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a name and a union of integers and
    // byte arrays): all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

impl Tap {
    /// Opens tap `name`, creating it if it does not exist. `None` lets the
    /// kernel pick a `vmtapN` name.
    pub fn open(name: Option<&str>) -> Result<Tap, TapError> {
        let wanted = name.unwrap_or("vmtap%d");
        if !valid_name(wanted) {
            return Err(TapError::Name(wanted.to_string()));
        }
        let flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        let tap = match Self::attach(wanted, flags) {
            // EINVAL for an existing tap: its IFF_MULTI_QUEUE differs (or
            // it is a tun, which the second attempt finds out as well).
            Err(TapError::SetIff { source, .. })
                if name.is_some() && source.raw_os_error() == Some(libc::EINVAL) =>
            {
                Self::attach(wanted, flags | libc::IFF_MULTI_QUEUE).map_err(|_| {
                    TapError::SetIff {
                        name: wanted.to_string(),
                        source,
                    }
                })?
            }
            other => other?,
        };
        let hdr = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer.
        let r = unsafe { libc::ioctl(tap.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr) };
        tap.check(r, "set the virtio-net header size")?;
        // SAFETY: TUNSETOFFLOAD takes an integer argument (no offloads).
        let r = unsafe {
            libc::ioctl(
                tap.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                0 as libc::c_ulong,
            )
        };
        tap.check(r, "disable offloads")?;
        Ok(tap)
    }

    /// Opens `/dev/net/tun` and attaches it to interface `wanted` with
    /// `flags` (TUNSETIFF).
    fn attach(wanted: &str, flags: libc::c_int) -> Result<Tap, TapError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = ifreq_for(wanted);
        req.ifr_ifru.ifru_flags = flags as i16;
        // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is; the
        // fd is open for the call.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if r < 0 {
            return Err(TapError::SetIff {
                name: wanted.to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: the kernel wrote a NUL-terminated name into ifr_name,
        // which is IFNAMSIZ bytes long.
        let name = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(Tap { file, name })
    }

    fn check(&self, r: libc::c_int, what: &'static str) -> Result<(), TapError> {
        if r < 0 {
            Err(TapError::Configure {
                what,
                name: self.name.clone(),
                source: std::io::Error::last_os_error(),
            })
        } else {
            Ok(())
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn socket(&self) -> Result<OwnedFd, TapError> {
        // SAFETY: plain socket(2) call; the result is checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        self.check(fd, "open a configuration socket")?;
        // SAFETY: `fd` is a new socket that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Sets the host-side IPv4 address and netmask.
    pub fn set_address(&self, ip: Ipv4Addr, mask: Ipv4Addr) -> Result<(), TapError> {
        let sock = self.socket()?;
        for (request, addr, what) in [
            (libc::SIOCSIFADDR, ip, "set the address"),
            (libc::SIOCSIFNETMASK, mask, "set the netmask"),
        ] {
            let mut req = ifreq_for(&self.name);
            // struct sockaddr_in as a struct sockaddr: family, port (0),
            // then the address in network order.
            let mut sa = libc::sockaddr {
                sa_family: libc::AF_INET as libc::sa_family_t,
                sa_data: [0; 14],
            };
            for (d, b) in sa.sa_data[2..6].iter_mut().zip(addr.octets()) {
                *d = b as libc::c_char;
            }
            req.ifr_ifru.ifru_addr = sa;
            // SAFETY: the request takes an ifreq, which `req` is.
            let r = unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) };
            self.check(r, what)?;
        }
        Ok(())
    }

    /// Brings the interface up.
    pub fn up(&self) -> Result<(), TapError> {
        let sock = self.socket()?;
        let mut req = ifreq_for(&self.name);
        // SAFETY: SIOCGIFFLAGS fills the ifreq's flags.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
        self.check(r, "read the flags")?;
        // SAFETY: the kernel just wrote the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as i16;
        // SAFETY: SIOCSIFFLAGS reads the ifreq.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) };
        self.check(r, "bring the interface up")
    }

    /// The tap's file (reads give one frame with its header, writes send one).
    pub fn into_file(self) -> File {
        self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(matches!(Tap::open(Some("")), Err(TapError::Name(_))));
        assert!(matches!(
            Tap::open(Some("a-name-far-too-long")),
            Err(TapError::Name(_))
        ));
        assert!(matches!(Tap::open(Some("a/b")), Err(TapError::Name(_))));
    }

    #[test]
    fn an_existing_non_tap_interface_is_refused() {
        if !std::path::Path::new("/dev/net/tun").exists() {
            return;
        }
        // `lo` exists and is not a tap.
        let err = Tap::open(Some("lo")).expect_err("lo is not a tap");
        assert!(
            matches!(err, TapError::SetIff { .. } | TapError::OpenTun(_)),
            "{err}"
        );
    }

    #[test]
    fn create_configure_and_drop() {
        if !std::path::Path::new("/dev/net/tun").exists() {
            return;
        }
        let name = format!("vdt{}", std::process::id() % 100_000);
        let tap = match Tap::open(Some(&name)) {
            Ok(t) => t,
            // Not root: nothing more to check here.
            Err(TapError::SetIff { .. }) => return,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(tap.name(), name);
        tap.set_address(
            Ipv4Addr::new(192, 168, 251, 1),
            Ipv4Addr::new(255, 255, 255, 0),
        )
        .unwrap();
        tap.up().unwrap();
        assert!(std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
        drop(tap);
        // Not persistent: gone with its file.
        assert!(!std::path::Path::new(&format!("/sys/class/net/{name}")).exists());
    }
}
