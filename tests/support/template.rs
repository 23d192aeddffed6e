//! What `template.yaml` says of the functions: the DynamoDB actions it grants (by policy, and
//! by function binary), and their timeouts.

use serde_yaml::Value;
use std::collections::BTreeSet;

/// `template.yaml`, parsed (CloudFormation's short tags kept as tagged values).
pub fn template() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
        .expect("template.yaml");
    serde_yaml::from_str(&text).expect("template.yaml parses")
}

/// The functions (logical id, resource) that run `binary`.
fn functions_running<'t>(t: &'t Value, binary: &str) -> Vec<(String, &'t Value)> {
    let found: Vec<(String, &Value)> = t["Resources"]
        .as_mapping()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"].as_str() == Some(binary))
        .map(|(name, r)| (name.as_str().unwrap_or_default().to_string(), r))
        .collect();
    assert!(!found.is_empty(), "no function runs {binary}");
    found
}

/// The shortest timeout of the functions that run `binary`.
pub fn function_timeout(t: &Value, binary: &str) -> std::time::Duration {
    functions_running(t, binary)
        .iter()
        .map(|(name, r)| {
            r["Properties"]["Timeout"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name} has a timeout"))
        })
        .min()
        .map(std::time::Duration::from_secs)
        .expect("a function")
}

/// The DynamoDB actions in `statements` (a policy document's), without the `dynamodb:` prefix.
fn actions_of(statements: &Value) -> BTreeSet<String> {
    statements
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|s| match &s["Action"] {
            Value::Sequence(actions) => actions.clone(),
            action => vec![action.clone()],
        })
        .filter_map(|a| a.as_str()?.strip_prefix("dynamodb:").map(str::to_string))
        .collect()
}

/// The DynamoDB actions the template's managed policy `policy` grants.
pub fn table_actions(t: &Value, policy: &str) -> BTreeSet<String> {
    let statements = &t["Resources"][policy]["Properties"]["PolicyDocument"]["Statement"];
    assert!(statements.is_sequence(), "{policy} has statements");
    actions_of(statements)
}

/// The DynamoDB actions the template grants the functions that run `binary` (every function
/// built from it must be granted the same): its managed policies' and its inline ones'.
pub fn function_table_actions(t: &Value, binary: &str) -> BTreeSet<String> {
    let grants: Vec<(String, BTreeSet<String>)> = functions_running(t, binary)
        .into_iter()
        .map(|(name, r)| {
            let actions = r["Properties"]["Policies"]
                .as_sequence()
                .into_iter()
                .flatten()
                .flat_map(|p| match p {
                    Value::Tagged(tag) if tag.tag == "!Ref" => {
                        table_actions(t, tag.value.as_str().expect("a policy's name"))
                    }
                    inline => actions_of(&inline["Statement"]),
                })
                .collect();
            (name, actions)
        })
        .collect();
    let (first, actions) = &grants[0];
    for (name, other) in &grants {
        assert_eq!(
            other, actions,
            "{name} and {first} run {binary} with other grants"
        );
    }
    actions.clone()
}
