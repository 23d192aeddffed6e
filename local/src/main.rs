//! `conveyor`: the local runtime's command line.

fn main() -> std::process::ExitCode {
    local::run_cli()
}
