//! The guest's emulated devices: a 16550 UART on I/O ports 0x3F8–0x3FF (the guest's console,
//! forwarded line by line to the real serial port with a prefix: `guest: ` for the test guest,
//! `L1: ` for a guest hypervisor) and a small MMIO device on the page at [`abi::MMIO_BASE`].

use crate::guest::abi::{self, mmio, uart};
use mini_hv_logic::l1_kernel::{Reported, reported_result, reported_round_trip};

/// The longest line the UART buffers before forwarding it.
const LINE_MAX: usize = 256;

/// An emulated 16550 UART (transmit side; the receiver never has data).
pub struct Uart {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    line: [u8; LINE_MAX],
    len: usize,
    prefix: &'static str,
    /// Bytes the guest transmitted.
    pub transmitted: u64,
    /// What the guest's last `mini-hv: RESULT` line said (a guest hypervisor's verdict).
    pub result: Option<Reported>,
    /// The median of the guest's last `mini-hv: CPUID round trip ... median <n>` line (the
    /// round trip a guest hypervisor measured of its own guest).
    pub round_trip: Option<u64>,
}

impl Uart {
    /// The UART after reset, its lines forwarded with `prefix`.
    pub const fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            result: None,
            round_trip: None,
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            dll: 0,
            dlm: 0,
            line: [0; LINE_MAX],
            len: 0,
            transmitted: 0,
        }
    }

    /// Whether `port` belongs to the UART.
    pub fn claims(port: u16) -> bool {
        (uart::BASE..uart::BASE + 8).contains(&port)
    }

    fn dlab(&self) -> bool {
        self.lcr & uart::LCR_DLAB != 0
    }

    /// A byte write to `port` (one the UART claims).
    pub fn write(&mut self, port: u16, value: u8) {
        match port - uart::BASE {
            uart::THR if self.dlab() => self.dll = value,
            uart::THR => self.transmit(value),
            uart::IER if self.dlab() => self.dlm = value,
            uart::IER => self.ier = value & 0x0f,
            uart::LCR => self.lcr = value,
            uart::MCR => self.mcr = value & 0x1f,
            uart::SCR => self.scr = value,
            // FCR, LSR and MSR: writes have no effect on this model.
            _ => {}
        }
    }

    /// A byte read from `port` (one the UART claims).
    pub fn read(&mut self, port: u16) -> u8 {
        match port - uart::BASE {
            uart::THR if self.dlab() => self.dll,
            uart::THR => 0,
            uart::IER if self.dlab() => self.dlm,
            uart::IER => self.ier,
            uart::IIR => uart::IIR_NONE,
            uart::LCR => self.lcr,
            uart::MCR => self.mcr,
            uart::LSR => uart::LSR_THRE_TEMT,
            uart::MSR => 0xb0, // CTS, DSR, DCD
            _ => self.scr,
        }
    }

    fn transmit(&mut self, byte: u8) {
        self.transmitted += 1;
        match byte {
            b'\r' => {}
            b'\n' => self.flush(),
            _ => {
                if self.len == LINE_MAX {
                    self.flush();
                }
                self.line[self.len] = byte;
                self.len += 1;
            }
        }
    }

    /// Whether a line is buffered without its newline yet.
    pub fn has_partial_line(&self) -> bool {
        self.len > 0
    }

    /// Forwards the buffered line.
    pub fn flush(&mut self) {
        let line = &self.line[..self.len];
        crate::print!("{}", self.prefix);
        print_sanitized(line);
        crate::println!();
        if let Some(result) = reported_result(line) {
            self.result = Some(result);
        }
        if let Some(median) = reported_round_trip(line) {
            self.round_trip = Some(median);
        }
        self.len = 0;
    }
}

/// Prints guest-supplied bytes, replacing anything but printable ASCII by `.`.
pub fn print_sanitized(bytes: &[u8]) {
    for &b in bytes {
        let c = if (0x20..0x7f).contains(&b) {
            b as char
        } else {
            '.'
        };
        crate::print!("{c}");
    }
}

/// Why an MMIO access could not be emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioError {
    /// Offset of the access in the device page.
    pub offset: u64,
    /// Size of the access in bytes.
    pub size: u8,
}

/// The emulated MMIO device (registers in [`abi::mmio`]).
pub struct MmioDevice {
    scratch: u64,
    counter: u64,
    writes: u64,
}

impl MmioDevice {
    /// The device after reset.
    pub const fn new() -> Self {
        Self {
            scratch: 0,
            counter: 0,
            writes: 0,
        }
    }

    /// Whether the guest-physical address is on the device's page.
    pub fn claims(gpa: u64) -> bool {
        (abi::MMIO_BASE..abi::MMIO_BASE + 0x1000).contains(&gpa)
    }

    fn register(offset: u64, size: u8) -> Result<(u64, u32), MmioError> {
        let within = offset & 7;
        if !matches!(size, 1 | 2 | 4 | 8) || within + u64::from(size) > 8 {
            return Err(MmioError { offset, size });
        }
        Ok((offset & !7, (within * 8) as u32))
    }

    fn mask(size: u8) -> u64 {
        if size == 8 {
            u64::MAX
        } else {
            (1u64 << (u32::from(size) * 8)) - 1
        }
    }

    /// A read of `size` bytes at `offset` in the device page.
    pub fn read(&mut self, offset: u64, size: u8) -> Result<u64, MmioError> {
        let (reg, shift) = Self::register(offset, size)?;
        let value = match reg {
            mmio::ID => u64::from(mmio::ID_VALUE),
            mmio::SCRATCH => self.scratch,
            mmio::COUNTER => {
                self.counter += 1;
                self.counter
            }
            mmio::WRITES => self.writes,
            _ => 0,
        };
        Ok((value >> shift) & Self::mask(size))
    }

    /// A write of `size` bytes at `offset` in the device page; writes to read-only registers are
    /// ignored (and not counted).
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), MmioError> {
        let (reg, shift) = Self::register(offset, size)?;
        if reg == mmio::SCRATCH {
            let mask = Self::mask(size) << shift;
            self.scratch = (self.scratch & !mask) | ((value << shift) & mask);
            self.writes += 1;
        }
        Ok(())
    }
}
