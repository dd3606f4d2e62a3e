// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Message-signalled interrupts: decoding an MSI address/data pair (Intel
//! SDM vol. 3, "Message Signalled Interrupts") into an [`InterruptMessage`].

use super::message::{DeliveryMode, DestinationMode, InterruptMessage, TriggerMode};

/// MSI addresses have 0xfee in bits 31:20.
const MSI_ADDRESS_PREFIX: u64 = 0xfee;

/// Errors decoding an MSI.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsiError {
    /// The address is not in the 0xFEExxxxx interrupt window.
    #[error("MSI address {0:#x} is not of the form 0xFEExxxxx")]
    Address(u64),
}

/// Decodes an MSI write: address bits 19:12 destination ID, bit 2
/// destination mode (1 = logical); data bits 7:0 vector, 10:8 delivery
/// mode, bit 15 trigger mode (1 = level). The redirection hint (address
/// bit 3) and the level-assert bit (data bit 14) are ignored.
pub fn decode_msi(address: u64, data: u32) -> Result<InterruptMessage, MsiError> {
    if address >> 20 != MSI_ADDRESS_PREFIX {
        return Err(MsiError::Address(address));
    }
    Ok(InterruptMessage {
        vector: (data & 0xff) as u8,
        delivery_mode: DeliveryMode::from_bits(u64::from(data)),
        destination_mode: if address & (1 << 2) != 0 {
            DestinationMode::Logical
        } else {
            DestinationMode::Physical
        },
        destination: ((address >> 12) & 0xff) as u8,
        trigger_mode: if data & (1 << 15) != 0 {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_fields() {
        let m = decode_msi(0xfee0_0000, 0x0000_0041).unwrap();
        assert_eq!(
            m,
            InterruptMessage {
                vector: 0x41,
                delivery_mode: DeliveryMode::Fixed,
                destination_mode: DestinationMode::Physical,
                destination: 0,
                trigger_mode: TriggerMode::Edge,
            }
        );
        let m = decode_msi(0xfeea_b00c, 0xffff_c1fe).unwrap();
        assert_eq!(m.vector, 0xfe);
        assert_eq!(m.delivery_mode, DeliveryMode::LowestPriority);
        assert_eq!(m.destination_mode, DestinationMode::Logical);
        assert_eq!(m.destination, 0xab);
        assert_eq!(m.trigger_mode, TriggerMode::Level);
        assert_eq!(
            decode_msi(0xfee0_0000, 0x400).unwrap().delivery_mode,
            DeliveryMode::Nmi
        );
    }

    #[test]
    fn rejects_other_addresses() {
        for a in [0u64, 0xfed0_0000, 0xfef0_0000, 0x1_fee0_0000, u64::MAX] {
            assert_eq!(decode_msi(a, 0x41), Err(MsiError::Address(a)));
        }
    }
}
