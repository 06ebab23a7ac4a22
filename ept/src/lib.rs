//! Intel extended page tables (EPT): typed entries for every level, the EPT pointer, guest- and
//! host-physical addresses (SDM Vol. 3C §29.3 "The Extended Page Table Mechanism (EPT)").
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

mod addr;
mod entry;
mod eptp;
mod types;

pub use addr::{AddrError, GuestPhysAddr, HostPhysAddr, MAX_PHYS_ADDR_WIDTH};
pub use entry::{
    ADDRESS_MASK, EntryFlags, EntryKind, LeafAttributes, LeafFlags, MEMORY_TYPE_MASK, PdEntry,
    PdptEntry, Pml4Entry, Pml5Entry, PtEntry, reserved_mask,
};
pub use eptp::{EptPointer, EptpBuilder, EptpError};
pub use types::{
    Level, MemoryType, PageSize, Permissions, ReservedMemoryType, ReservedWalkLength, WalkLength,
};
