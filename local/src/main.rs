//! `conveyor`: the local runtime's command line.

/// A faster allocator than the system's for the runtime's many small, short-lived allocations
/// (requests, messages, jobs on their way through).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    local::run_cli()
}
