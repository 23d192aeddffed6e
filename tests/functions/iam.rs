//! Each function is granted the table actions it takes, and no more.

use crate::harness::{access_key, function_binaries, table_actions_used};
use crate::template::{function_table_actions, template};
use std::collections::BTreeSet;

#[tokio::test]
#[ignore = "run by `make test-functions` after every other test here, on the same emulator"]
async fn each_function_is_granted_exactly_the_table_actions_it_took() {
    // GIVEN every function run by the tests before this one, each able to take only the table
    // actions the template grants it (any other refused, as IAM refuses it), every action it
    // asked for noted
    let t = template();
    let used = table_actions_used().await;
    let mut wrong = vec![];
    for binary in function_binaries() {
        // THEN it asked for each action it is granted (a grant nothing takes is one too many),
        // and for none it is not (a refused action is a function failing in AWS)
        let granted = function_table_actions(&t, &binary);
        let asked: BTreeSet<String> = used
            .get(&access_key(&binary))
            .unwrap_or_else(|| panic!("{binary} never ran on this emulator"))
            .iter()
            .cloned()
            .collect();
        if asked != granted {
            wrong.push(format!(
                "{binary}: took but not granted {:?}, granted but never taken {:?}",
                asked.difference(&granted).collect::<Vec<_>>(),
                granted.difference(&asked).collect::<Vec<_>>()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
