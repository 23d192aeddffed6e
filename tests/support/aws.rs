//! The settings that put a deployment on the suite's AWS emulator.

/// The settings that put one deployment on the AWS backend of the suite's emulator, with a
/// table, bus and queues no other shares (its queues named `<tag><id>-…`), its table spread over
/// `shards` keys a tenant.
pub fn aws_env(tag: &str, shards: u32) -> Vec<(String, String)> {
    let id = ulid::Ulid::new().to_string().to_lowercase();
    [
        ("CONVEYOR_BACKEND", "aws".to_string()),
        ("AWS_ENDPOINT_URL", crate::moto::endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("CONVEYOR_TABLE", format!("jobs-{id}")),
        ("CONVEYOR_EVENT_BUS", format!("bus-{id}")),
        ("CONVEYOR_QUEUE_PREFIX", format!("{tag}{id}-")),
        ("CONVEYOR_SHARDS", shards.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
