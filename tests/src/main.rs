//! The local runtime, built inside the end-to-end package so its tests can start it as a real
//! process (`CARGO_BIN_EXE_conveyor-under-test`).

fn main() -> std::process::ExitCode {
    local::run_cli()
}
