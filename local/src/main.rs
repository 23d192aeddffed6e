//! `conveyor`: the local runtime's command line.

fn main() -> anyhow::Result<()> {
    local::run_cli()
}
