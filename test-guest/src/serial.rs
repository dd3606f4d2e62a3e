//! Output on the first serial port (COM1, 0x3f8).
//!
//! Only the transmit holding register is written: the VMM takes each byte
//! at once (each is one VM exit), so there is no initialisation and no
//! line-status polling, which would only cost more exits.

use core::fmt;

use crate::arch;

/// COM1's transmit holding register.
const COM1_THR: u16 = 0x3f8;

/// The serial port, as a `core::fmt::Write` sink.
#[derive(Debug)]
pub struct Serial;

impl Serial {
    /// Writes raw bytes.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            // SAFETY: writing THR only transmits a byte.
            unsafe { arch::outb(COM1_THR, byte) };
        }
    }
}

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Prints to the serial port.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        // Writing to the serial port cannot fail.
        let _ = core::fmt::Write::write_fmt(&mut $crate::serial::Serial, format_args!($($arg)*));
    }};
}

/// Prints a line (ending in `\n`) to the serial port.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        $crate::print!("{}\n", format_args!($($arg)*));
    }};
}
