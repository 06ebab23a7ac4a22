//! `mini-hv`: a freestanding example hypervisor built on the vmx crates.
//!
//! Boots from Multiboot (QEMU `-kernel`, GRUB), sets up the host (serial console, GDT/TSS/IDT, frame
//! allocator), prints a banner with the memory map, runs the hypervisor ([`hv::run`]: the test guest or
//! Linux) or the differential test of the VM-entry checker ([`entry_diff::run`]) and ends the emulator
//! with the result.
//! Run it with `cargo xtask run`.

#![no_std]
#![no_main]

mod serial;

mod arch;
mod boot;
mod entry_diff;
mod exit;
mod guest;
mod hv;
mod libc;
mod mem;
mod smp;

use hv::Outcome;

/// Prints the final line for `outcome` and ends the run.
fn finish(outcome: Outcome) -> ! {
    match outcome {
        Outcome::Pass => println!("mini-hv: RESULT PASS"),
        Outcome::Fail => println!("mini-hv: RESULT FAIL"),
        Outcome::Unsupported => println!("mini-hv: RESULT UNSUPPORTED"),
    }
    exit::exit(outcome)
}

fn print_memory_banner() {
    let (image_start, image_end) = boot::image_range();
    println!(
        "mini-hv: kernel image {image_start:#x}..{image_end:#x} ({} KiB)",
        (image_end - image_start) / 1024
    );
    let (stack_bottom, stack_top) = boot::stack_range();
    println!(
        "mini-hv: kernel stack {stack_bottom:#x}..{stack_top:#x}, guard page {:#x} unmapped",
        boot::stack_guard()
    );
    if let Some((lower, upper)) = boot::basic_memory() {
        println!("mini-hv: memory: {lower} KiB lower, {upper} KiB upper");
    }
    let mut available = 0u64;
    let mut regions = 0;
    for region in boot::memory_map() {
        regions += 1;
        if region.kind == boot::RegionKind::Available {
            available += region.len;
        }
        println!(
            "mini-hv:   {:#014x}..{:#014x} {:>9} KiB {}",
            region.base,
            region.base.saturating_add(region.len),
            region.len / 1024,
            region.kind
        );
    }
    println!(
        "mini-hv: memory map: {regions} regions, {} KiB available",
        available / 1024
    );
    for module in boot::modules() {
        println!(
            "mini-hv: module {:#x}..{:#x} ({} KiB) {}",
            module.start,
            module.end,
            (module.end - module.start) / 1024,
            module.cmdline
        );
    }
}

/// Checks the allocator's promises on a few real allocations: 4 KiB aligned, zeroed, inside usable RAM,
/// outside the kernel and the boot modules, distinct, and accounted in [`mem::total_free`].
fn allocator_self_test() -> Result<(), &'static str> {
    let before = mem::total_free();
    let one = mem::alloc_frame().ok_or("alloc_frame returned None")?;
    let four = mem::alloc_frames(4).ok_or("alloc_frames(4) returned None")?;
    let (image_start, image_end) = boot::kernel_range();
    for (addr, frames) in [(one, 1u64), (four, 4)] {
        let end = addr + frames * mem::FRAME_SIZE;
        if addr % mem::FRAME_SIZE != 0 {
            return Err("frame not 4 KiB aligned");
        }
        if addr < 0x10_0000 || end > 0x1_0000_0000 {
            return Err("frame outside 1 MiB..4 GiB");
        }
        if addr < image_end && end > image_start {
            return Err("frame overlaps the kernel image");
        }
        if boot::modules().any(|m| addr < m.end && end > m.start) {
            return Err("frame overlaps a boot module");
        }
        // SAFETY: the allocator just handed out [addr, end): identity-mapped RAM nobody else uses.
        let bytes =
            unsafe { core::slice::from_raw_parts(addr as *const u8, (end - addr) as usize) };
        if bytes.iter().any(|&b| b != 0) {
            return Err("frame not zeroed");
        }
    }
    if one < four + 4 * mem::FRAME_SIZE && four < one + mem::FRAME_SIZE {
        return Err("allocations overlap");
    }
    if mem::total_free() != before - 5 * mem::FRAME_SIZE {
        return Err("total_free did not drop by 5 frames");
    }
    if mem::alloc_frames(0).is_some() {
        return Err("alloc_frames(0) returned a frame");
    }
    if mem::alloc_frames(usize::MAX).is_some() {
        return Err("alloc_frames(usize::MAX) returned a frame");
    }
    Ok(())
}

/// Recurses until the kernel stack overflows into its guard page (1 KiB per frame, kept by `black_box`).
fn overflow_stack(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 128]);
    if depth == u64::MAX {
        return frame[0];
    }
    overflow_stack(depth + 1) + core::hint::black_box(frame)[127]
}

/// `fault=pf|ud|panic|stack` on the kernel command line makes the host fail on purpose, so that the runner's
/// tests can check the crash report and the panic path end the run with RESULT FAIL (never a hang).
fn fault_injection(cmdline: &str) {
    let Some(fault) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fault="))
    else {
        return;
    };
    println!("mini-hv: injecting a host fault on request: {fault}");
    match fault {
        // Above the 4 GiB identity map: not present.
        // SAFETY: deliberately faulting; the #PF handler ends the run and never returns here.
        "pf" => unsafe {
            core::ptr::read_volatile(0x40_0000_0000 as *const u64);
        },
        // SAFETY: deliberately raising #UD; the handler ends the run.
        "ud" => unsafe { core::arch::asm!("ud2") },
        "panic" => panic!("fault injection requested on the command line"),
        "stack" => {
            let depth = overflow_stack(0);
            println!("mini-hv: recursion returned at depth {depth}");
        }
        other => println!("mini-hv: unknown fault {other:?} ignored (known: pf, ud, panic, stack)"),
    }
}

/// `cpus=N` on the command line: starts the application processors (a processor that does not answer
/// is named and ends the run), then enters and leaves VMX operation on every processor; the
/// processors, for [`hv::run`] to give each its own vCPU.
/// `smp-fault=no-sipi` sends CPU 1 its INIT but no Start-up IPI (so it never answers);
/// `smp-fault=vmxon-cpuN` gives CPU N no VMXON region (so it cannot enter VMX operation).
fn start_processors(cmdline: &str) -> Result<Option<smp::Cpus>, Outcome> {
    let wanted = match smp::requested_cpus(cmdline) {
        Ok(1) => return Ok(None),
        Ok(n) => n,
        Err(e) => {
            println!("mini-hv: {e}");
            return Err(Outcome::Fail);
        }
    };
    let fault = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("smp-fault="));
    let (mut cpus, failure) = smp::start(wanted, fault == Some("no-sipi"));
    if let Some((cpu, id, why)) = failure {
        println!("mini-hv: CPU {cpu} (local APIC ID {id}) did not start: {why}");
        return Err(Outcome::Fail);
    }
    println!(
        "mini-hv: {} CPUs online (bootstrap APIC ID {}; each with its own stack, GDT, TSS and IST stack)",
        cpus.count(),
        smp::apic_id()
    );
    for cpu in 1..cpus.count() {
        if let Some(ticks) = cpus.start_ticks(cpu) {
            println!("mini-hv: CPU {cpu} answered INIT-SIPI-SIPI after {ticks} TSC ticks");
        }
    }
    if !vmx_caps::cpu_has_vmx() {
        return Ok(Some(cpus));
    }
    let withhold = fault
        .and_then(|f| f.strip_prefix("vmxon-cpu"))
        .and_then(|n| n.parse().ok());
    hv::smp::enter_and_leave_everywhere(&mut cpus, withhold)?;
    Ok(Some(cpus))
}

/// The Rust entry point, called by the boot code in long mode with the Multiboot magic and information.
#[unsafe(no_mangle)]
extern "C" fn kmain(magic: u32, info: u32) -> ! {
    serial::init();
    arch::init();
    println!();
    println!("mini-hv: booted in long mode (magic {magic:#010x}, info {info:#x})");
    if let Err(e) = boot::init(magic, info) {
        println!("mini-hv: cannot use the boot information: {e}");
        println!("mini-hv: RESULT FAIL (boot)");
        exit::exit(Outcome::Fail);
    }
    let loader = boot::loader_name();
    println!(
        "mini-hv: loader \"{}\", command line \"{}\"",
        loader,
        boot::cmdline()
    );
    print_memory_banner();
    let usable = mem::init();
    println!("mini-hv: frame allocator: {} KiB usable", usable / 1024);
    if mem::untracked() != 0 {
        println!(
            "mini-hv: frame allocator: {} KiB of RAM left untracked (range table full)",
            mem::untracked() / 1024
        );
    }
    if let Err(e) = allocator_self_test() {
        println!("mini-hv: frame allocator self-test failed: {e}");
        finish(Outcome::Fail);
    }
    // SAFETY: the kernel runs at CPL 0 in 64-bit mode, its GDT is identity-mapped and readable.
    let host = unsafe { vmcs::HostState::capture(vmx_caps::ExitControls::LOAD_IA32_EFER) };
    println!(
        "mini-hv: host CS {:#x} SS {:#x} DS {:#x} ES {:#x} FS {:#x} GS {:#x} TR {:#x}",
        host.cs, host.ss, host.ds, host.es, host.fs, host.gs, host.tr
    );
    println!(
        "mini-hv: host GDTR {:#x} IDTR {:#x} TR base {:#x} FS base {:#x} GS base {:#x}",
        host.gdtr_base, host.idtr_base, host.tr_base, host.fs_base, host.gs_base
    );
    println!(
        "mini-hv: host CR0 {:#x} CR3 {:#x} CR4 {:#x} EFER {:x?}",
        host.cr0.bits(),
        host.cr3,
        host.cr4.bits(),
        host.efer.map(|efer| efer.bits())
    );
    fault_injection(boot::cmdline());
    let mut cpus = match start_processors(boot::cmdline()) {
        Ok(cpus) => cpus,
        Err(outcome) => finish(outcome),
    };
    // The mode: the differential test of the VM-entry checker, or the hypervisor with its guest.
    let outcome = match entry_diff::requested() {
        Some(params) => entry_diff::run(params),
        None => hv::run(cpus.as_mut()),
    };
    finish(outcome)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(l) => println!(
            "\nmini-hv: PANIC at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        ),
        None => println!("\nmini-hv: PANIC: {}", info.message()),
    }
    println!("mini-hv: RESULT FAIL (panic)");
    exit::exit(Outcome::Fail)
}
