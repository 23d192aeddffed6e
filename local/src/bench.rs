pub async fn run(_args: Vec<String>) -> anyhow::Result<()> {
    Ok(())
}
