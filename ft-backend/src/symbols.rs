// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Symbols of a guest kernel image (an ELF with a symbol table, such as
//! Linux's `vmlinux` or the test guest), to name the code and data near a
//! divergence. Read-only parsing with the `object` crate.

use std::path::{Path, PathBuf};

use object::elf::PT_LOAD;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSymbol, SymbolKind};

/// Errors loading symbols.
#[derive(Debug, thiserror::Error)]
pub enum SymbolsError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a 64-bit ELF.
    #[error("{path} is not a 64-bit ELF image")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: object::read::Error,
    },
    /// The ELF has no symbols (stripped, or a bzImage).
    #[error("{path} has no symbol table")]
    NoSymbols {
        /// The file.
        path: PathBuf,
    },
}

/// A symbol: its name, start address and size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Symbol {
    addr: u64,
    size: u64,
    name: String,
}

/// Where an address is: the nearest symbol at or below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The symbol's name.
    pub name: String,
    /// The address minus the symbol's start.
    pub offset: u64,
    /// Whether the address lies within the symbol's size (else it is only
    /// the nearest one below).
    pub inside: bool,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{:#x}", self.name, self.offset)?;
        if !self.inside {
            write!(f, " (past its end)")?;
        }
        Ok(())
    }
}

/// A kernel image's code and data symbols, sorted by address, and its
/// loadable segments (to turn guest-physical addresses into virtual ones).
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    symbols: Vec<Symbol>,
    /// (physical start, virtual start, size) of each PT_LOAD segment.
    segments: Vec<(u64, u64, u64)>,
}

impl Symbols {
    /// Reads the symbol table of the ELF at `path`.
    pub fn load(path: &Path) -> Result<Self, SymbolsError> {
        let data = std::fs::read(path).map_err(|source| SymbolsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &data)
    }

    /// Parses ELF bytes (`path` only names them in errors).
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self, SymbolsError> {
        let elf = ElfFile64::<Endianness>::parse(data).map_err(|source| SymbolsError::NotElf {
            path: path.to_path_buf(),
            source,
        })?;
        let endian = elf.endian();
        let segments = elf
            .elf_program_headers()
            .iter()
            .filter(|p| p.p_type(endian) == PT_LOAD)
            .map(|p| (p.p_paddr(endian), p.p_vaddr(endian), p.p_memsz(endian)))
            .collect();
        let mut symbols: Vec<Symbol> = elf
            .symbols()
            .filter(|s| matches!(s.kind(), SymbolKind::Text | SymbolKind::Data))
            .filter(|s| s.address() != 0)
            .filter_map(|s| {
                let name = s.name().ok()?;
                (!name.is_empty()).then(|| Symbol {
                    addr: s.address(),
                    size: s.size(),
                    name: name.to_string(),
                })
            })
            .collect();
        if symbols.is_empty() {
            return Err(SymbolsError::NoSymbols {
                path: path.to_path_buf(),
            });
        }
        // By address; at one address, sized symbols before labels.
        symbols.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size.cmp(&a.size)));
        Ok(Symbols { symbols, segments })
    }

    /// The nearest symbol at or below the virtual address `addr`.
    pub fn locate(&self, addr: u64) -> Option<Location> {
        let i = self.symbols.partition_point(|s| s.addr <= addr);
        // Prefer a symbol that contains the address among those at or
        // below it (the last one may be a zero-sized label).
        let below = &self.symbols[..i];
        let s = below
            .iter()
            .rev()
            .take(8)
            .find(|s| addr < s.addr.saturating_add(s.size))
            .or_else(|| below.last())?;
        Some(Location {
            name: s.name.clone(),
            offset: addr - s.addr,
            inside: addr < s.addr.saturating_add(s.size),
        })
    }

    /// The virtual address the image maps guest-physical `gpa` at, if a
    /// loadable segment covers it.
    pub fn virtual_of(&self, gpa: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(p, _, size)| gpa >= *p && gpa - *p < *size)
            .map(|(p, v, _)| v + (gpa - p))
    }

    /// The symbols a guest-physical page `[gpa, gpa + len)` holds (through
    /// the loadable segments), at most `max`, with the symbol the page
    /// starts in first.
    pub fn in_physical_range(&self, gpa: u64, len: u64, max: usize) -> Vec<Location> {
        let Some(start) = self.virtual_of(gpa) else {
            return Vec::new();
        };
        let end = start.saturating_add(len);
        let mut out: Vec<Location> = self.locate(start).into_iter().collect();
        let i = self.symbols.partition_point(|s| s.addr <= start);
        for s in self.symbols[i..].iter().take_while(|s| s.addr < end) {
            if out.len() >= max {
                break;
            }
            out.push(Location {
                name: s.name.clone(),
                offset: 0,
                inside: true,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_an_elf_with_symbols() {
        let p = Path::new("x");
        assert!(matches!(
            Symbols::parse(p, b"not an elf"),
            Err(SymbolsError::NotElf { .. })
        ));
        assert!(matches!(
            Symbols::load(Path::new("/nonexistent/vmlinux")),
            Err(SymbolsError::Io { .. })
        ));
    }

    /// A symbol every build of the test binary keeps (`no_mangle` items
    /// survive inlining and LTO, which can fold a test function away).
    #[no_mangle]
    #[inline(never)]
    extern "C" fn ft_backend_symbols_test_marker() -> u64 {
        std::hint::black_box(42)
    }

    #[test]
    fn locates_symbols_of_a_real_elf() {
        assert_eq!(ft_backend_symbols_test_marker(), 42);
        // The test binary itself is an ELF with a symbol table.
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let syms = Symbols::load(&exe).expect("the test binary has symbols");
        // A PIE is loaded at an offset: look the symbol up by name.
        let s = syms
            .symbols
            .iter()
            .find(|s| s.name == "ft_backend_symbols_test_marker")
            .expect("own symbol");
        let loc = syms.locate(s.addr + 1).expect("located");
        assert_eq!(loc.offset, 1);
        assert!(loc.inside);
        assert_eq!(loc.name, "ft_backend_symbols_test_marker");
    }
}
