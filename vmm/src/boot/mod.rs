// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Direct kernel boot, as Cloud Hypervisor does it: an ELF with a PVH note
//! (32-bit protected-mode entry with `hvm_start_info`), or a bzImage through
//! the Linux 64-bit boot protocol.

mod acpi;
mod bzimage;
mod cpu_state;
mod pvh;

use std::fs::File;
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

pub use cpu_state::{initial_fpu, initial_msrs, initial_regs, initial_sregs};

use crate::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIGH_RAM_START};
use crate::memory::GuestMemoryMmapT;
use ft_backend::error_chain;

/// Errors while loading a kernel and its boot data.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel file cannot be opened.
    #[error("cannot open kernel file {path}")]
    OpenKernel {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The initramfs file cannot be read.
    #[error("cannot read initramfs file {path}")]
    ReadInitramfs {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither loader accepted the file.
    #[error("{path} is neither an ELF kernel with a PVH note nor a bzImage (ELF: {elf}; bzImage: {bzimage})")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What the ELF loader said.
        elf: String,
        /// What the bzImage loader said.
        bzimage: String,
    },
    /// An ELF kernel without the PVH entry note.
    #[error("{0} is an ELF kernel without a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); only PVH ELF kernels are supported")]
    NoPvhNote(PathBuf),
    /// The command line does not fit.
    #[error("kernel command line is too long ({len} bytes, at most {max})")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The command line holds a NUL byte.
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    /// The initramfs does not fit in low RAM above the kernel.
    #[error("initramfs of {size} bytes does not fit in guest memory above the kernel")]
    InitramfsTooLarge {
        /// Its size.
        size: u64,
    },
    /// Writing boot data into guest memory failed.
    #[error("cannot write {what} into guest memory")]
    GuestMemory {
        /// What was written.
        what: &'static str,
        /// Why.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The ACPI tables do not fit below 1 MiB.
    #[error("the ACPI tables do not fit below 1 MiB")]
    AcpiTooLarge,
    /// linux-loader could not write the boot parameters.
    #[error("cannot write the boot parameters")]
    Configurator(#[source] linux_loader::configurator::Error),
}

/// How the vCPU enters the loaded kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// PVH: 32-bit protected mode at `entry`, EBX = `start_info`.
    Pvh {
        /// Entry address.
        entry: GuestAddress,
        /// Address of `hvm_start_info`.
        start_info: GuestAddress,
    },
    /// Linux 64-bit boot protocol: long mode at `entry`, RSI = `boot_params`.
    Linux64 {
        /// Entry address (`startup_64`).
        entry: GuestAddress,
        /// Address of the zero page.
        boot_params: GuestAddress,
    },
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootSpec<'a> {
    /// The kernel file.
    pub kernel: &'a Path,
    /// The command line.
    pub cmdline: &'a str,
    /// An optional initramfs.
    pub initramfs: Option<&'a Path>,
}

/// An initramfs placed in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitramfsPlacement {
    /// Where it starts.
    pub addr: GuestAddress,
    /// Its size in bytes.
    pub size: u64,
}

/// Loads the kernel, command line and initramfs into `mem` and writes the
/// boot protocol's data structures.
pub fn load(mem: &GuestMemoryMmapT, spec: &BootSpec<'_>) -> Result<EntryPoint, BootError> {
    let mut file = File::open(spec.kernel).map_err(|source| BootError::OpenKernel {
        path: spec.kernel.to_path_buf(),
        source,
    })?;
    write_cmdline(mem, spec.cmdline)?;
    let rsdp = acpi::write_tables(mem)?;
    match pvh::load(mem, &mut file) {
        Ok(Some(entry)) => {
            let initramfs = load_initramfs(mem, spec.initramfs, None)?;
            pvh::write_start_info(mem, entry, rsdp, initramfs)
        }
        Ok(None) => Err(BootError::NoPvhNote(spec.kernel.to_path_buf())),
        Err(elf_err) => match bzimage::load(mem, &mut file) {
            Ok(loaded) => {
                let initramfs = load_initramfs(mem, spec.initramfs, Some(loaded.initrd_addr_max))?;
                bzimage::write_boot_params(mem, &loaded, spec.cmdline, rsdp, initramfs)
            }
            Err(bz_err) => Err(BootError::UnknownFormat {
                path: spec.kernel.to_path_buf(),
                elf: error_chain(&elf_err),
                bzimage: error_chain(&bz_err),
            }),
        },
    }
}

fn write_cmdline(mem: &GuestMemoryMmapT, cmdline: &str) -> Result<(), BootError> {
    if cmdline.len() >= CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: CMDLINE_MAX_SIZE - 1,
        });
    }
    if cmdline.as_bytes().contains(&0) {
        return Err(BootError::CmdlineNul);
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, CMDLINE_START)
        .map_err(|source| BootError::GuestMemory {
            what: "the kernel command line",
            source,
        })
}

/// End of the RAM below the 32-bit hole.
fn low_ram_end(mem: &GuestMemoryMmapT) -> u64 {
    mem.iter()
        .find(|r| r.start_addr().0 == 0)
        .map(|r| r.len())
        .unwrap_or(0)
}

/// Places the initramfs at the top of low RAM (below `max_addr` when the
/// kernel says so), page aligned.
fn load_initramfs(
    mem: &GuestMemoryMmapT,
    path: Option<&Path>,
    max_addr: Option<u64>,
) -> Result<Option<InitramfsPlacement>, BootError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let data = std::fs::read(path).map_err(|source| BootError::ReadInitramfs {
        path: path.to_path_buf(),
        source,
    })?;
    let size = data.len() as u64;
    let mut top = low_ram_end(mem);
    if let Some(max) = max_addr {
        top = top.min(max.saturating_add(1));
    }
    let addr = top.checked_sub(size).map(|a| a & !0xfff);
    let floor = HIGH_RAM_START.0 + 16 * 1024 * 1024;
    let Some(addr) = addr.filter(|&a| a >= floor) else {
        return Err(BootError::InitramfsTooLarge { size });
    };
    mem.write_slice(&data, GuestAddress(addr))
        .map_err(|source| BootError::GuestMemory {
            what: "the initramfs",
            source,
        })?;
    Ok(Some(InitramfsPlacement {
        addr: GuestAddress(addr),
        size,
    }))
}

/// The RAM map handed to the guest: `(start, size)` of usable RAM.
pub fn ram_map(mem: &GuestMemoryMmapT) -> Vec<(u64, u64)> {
    let mut map = vec![(0, EBDA_START)];
    for r in mem.iter() {
        let start = r.start_addr().0.max(HIGH_RAM_START.0);
        let end = r.start_addr().0 + r.len();
        if end > start {
            map.push((start, end - start));
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem(size: usize) -> GuestMemoryMmapT {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    #[test]
    fn ram_map_skips_bios_area() {
        let m = mem(64 << 20);
        assert_eq!(
            ram_map(&m),
            vec![(0, EBDA_START), (0x10_0000, (64 << 20) - 0x10_0000)]
        );
    }

    #[test]
    fn cmdline_checks() {
        let m = mem(16 << 20);
        write_cmdline(&m, "console=ttyS0").unwrap();
        let mut buf = [0u8; 14];
        m.read_slice(&mut buf, CMDLINE_START).unwrap();
        assert_eq!(&buf, b"console=ttyS0\0");
        assert!(matches!(
            write_cmdline(&m, &"x".repeat(CMDLINE_MAX_SIZE)),
            Err(BootError::CmdlineTooLong { .. })
        ));
        assert!(matches!(
            write_cmdline(&m, "a\0b"),
            Err(BootError::CmdlineNul)
        ));
    }

    #[test]
    fn missing_and_garbage_kernels() {
        let m = mem(32 << 20);
        let spec = BootSpec {
            kernel: Path::new("/nonexistent/kernel"),
            cmdline: "",
            initramfs: None,
        };
        assert!(matches!(load(&m, &spec), Err(BootError::OpenKernel { .. })));
        let dir = std::env::temp_dir().join(format!("vmm-boot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage");
        std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
        let spec = BootSpec {
            kernel: &garbage,
            cmdline: "",
            initramfs: None,
        };
        let err = load(&m, &spec).unwrap_err();
        assert!(matches!(err, BootError::UnknownFormat { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn initramfs_goes_to_the_top_of_low_ram() {
        let m = mem(64 << 20);
        let dir = std::env::temp_dir().join(format!("vmm-initrd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("initrd");
        std::fs::write(&f, vec![7u8; 5000]).unwrap();
        let p = load_initramfs(&m, Some(&f), None).unwrap().unwrap();
        assert_eq!(p.size, 5000);
        assert_eq!(p.addr.0 & 0xfff, 0);
        assert!(p.addr.0 + 5000 <= 64 << 20);
        let big = dir.join("big");
        std::fs::write(&big, vec![0u8; 60 << 20]).unwrap();
        assert!(matches!(
            load_initramfs(&m, Some(&big), None),
            Err(BootError::InitramfsTooLarge { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
