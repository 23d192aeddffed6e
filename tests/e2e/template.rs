//! The SAM template and the code must not drift: every job type has its queue, dead-letter
//! queue and worker function with the type's options, every queue and function in the template
//! belongs to a type or a binary, every variable the template passes is one `Config` reads, and
//! no policy allows a Scan.

use serde_yaml::Value;
use shared::jobs::{BuiltinSettings, Registry};
use std::collections::BTreeSet;
use std::time::Duration;

/// Lambda's longest run, and the margin a worker function has beyond its job's timeout.
const LAMBDA_MAX: u64 = 900;
const MARGIN: u64 = 10;

fn template() -> (String, Value) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
        .expect("template.yaml");
    let yaml = serde_yaml::from_str(&text).expect("template.yaml parses");
    (text, yaml)
}

/// `!Sub "…"` / `!Ref X` / `!GetAtt X.Y` as (tag, text).
fn tagged(v: &Value) -> Option<(String, String)> {
    match v {
        Value::Tagged(t) => Some((t.tag.to_string(), t.value.as_str()?.to_string())),
        _ => None,
    }
}

fn logical_prefix(job_type: &str) -> String {
    job_type
        .split('.')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v:?}"))
}

#[test]
fn the_template_and_the_registry_describe_the_same_types_queues_and_functions() {
    let (text, t) = template();
    let resources = t["Resources"].as_mapping().expect("Resources");
    let registry = Registry::builtin("", &BuiltinSettings::default());
    let env = &t["Globals"]["Function"]["Environment"]["Variables"];
    // Queue names: the stack's name, a dash, then what the registry names the queue.
    let prefix = tagged(&env["CONVEYOR_QUEUE_PREFIX"])
        .expect("a !Sub prefix")
        .1;
    assert_eq!(prefix, "${AWS::StackName}-");

    let mut expected_queues = BTreeSet::new();
    let mut expected_workers = BTreeSet::new();
    for reg in registry.iter() {
        let o = &reg.options;
        let l = logical_prefix(reg.job_type.as_str());
        let queue = &t["Resources"][format!("{l}Queue").as_str()]["Properties"];
        let dlq = &t["Resources"][format!("{l}DeadLetterQueue").as_str()]["Properties"];
        let worker = &t["Resources"][format!("{l}WorkerFunction").as_str()];
        let name = format!("{prefix}{}", registry.queue_name(&reg.job_type));
        assert_eq!(
            tagged(&queue["QueueName"]).map(|n| n.1),
            Some(name.clone()),
            "{l}"
        );
        assert_eq!(
            tagged(&dlq["QueueName"]).map(|n| n.1),
            Some(format!("{name}-dlq")),
            "{l}"
        );
        assert_eq!(
            tagged(&queue["RedrivePolicy"]["deadLetterTargetArn"]).map(|a| a.1),
            Some(format!("{l}DeadLetterQueue.Arn")),
            "{l}"
        );
        assert_eq!(
            tagged(&queue["RedrivePolicy"]["maxReceiveCount"]).map(|a| a.1),
            Some("MaxReceiveCount".into())
        );
        // The function outlives its job by the whole margin, within Lambda's limit (no type's
        // timeout eats into it), and the queue hides a message six times as long as the
        // function runs (what Lambda asks of an SQS event source).
        let function_timeout = o.timeout.as_secs() + MARGIN;
        assert!(
            function_timeout <= LAMBDA_MAX,
            "{l}: a {}s job leaves its function no margin",
            o.timeout.as_secs()
        );
        assert_eq!(o.function_timeout(), Duration::from_secs(function_timeout));
        assert_eq!(
            num(&worker["Properties"]["Timeout"]),
            function_timeout,
            "{l}"
        );
        let visibility = num(&queue["VisibilityTimeout"]);
        assert_eq!(Duration::from_secs(visibility), o.visibility(), "{l}");
        assert!(visibility >= 6 * function_timeout, "{l}: {visibility}s");
        assert_eq!(worker["Metadata"]["BuildProperties"]["Binary"], "worker");
        let source = &worker["Properties"]["Events"]["Queue"]["Properties"];
        assert_eq!(
            tagged(&source["Queue"]).map(|q| q.1),
            Some(format!("{l}Queue.Arn"))
        );
        assert_eq!(num(&source["BatchSize"]), o.batch_size as u64, "{l}");
        assert_eq!(
            num(&source["ScalingConfig"]["MaximumConcurrency"]),
            o.concurrency.max(2) as u64,
            "{l}"
        );
        assert_eq!(
            source["FunctionResponseTypes"][0],
            "ReportBatchItemFailures"
        );
        // Every queue is one the functions may send to; every DLQ one maintenance may read.
        for (policy, queue) in [
            ("SendPolicy", format!("{l}Queue.Arn")),
            ("DeadLetterPolicy", format!("{l}DeadLetterQueue.Arn")),
        ] {
            let granted =
                &t["Resources"][policy]["Properties"]["PolicyDocument"]["Statement"][0]["Resource"];
            let arns: Vec<String> = granted
                .as_sequence()
                .unwrap_or_else(|| panic!("{policy} lists its queues"))
                .iter()
                .filter_map(|r| tagged(r).map(|t| t.1))
                .collect();
            assert!(arns.contains(&queue), "{policy} lacks {queue}: {arns:?}");
        }
        expected_queues.extend([format!("{l}Queue"), format!("{l}DeadLetterQueue")]);
        // A type with a high-priority queue: the same settings and dead-letter queue, and an
        // event source of its own on the same function, `ratio` times the concurrency.
        if let Some(ratio) = o.high_priority_ratio {
            let high = &t["Resources"][format!("{l}HighQueue").as_str()]["Properties"];
            assert_eq!(
                tagged(&high["QueueName"]).map(|n| n.1),
                Some(format!(
                    "{prefix}{}",
                    registry.high_queue_name(&reg.job_type).unwrap()
                )),
                "{l}"
            );
            assert_eq!(high["VisibilityTimeout"], queue["VisibilityTimeout"], "{l}");
            assert_eq!(high["RedrivePolicy"], queue["RedrivePolicy"], "{l}");
            let source = &worker["Properties"]["Events"]["HighQueue"]["Properties"];
            assert_eq!(
                tagged(&source["Queue"]).map(|q| q.1),
                Some(format!("{l}HighQueue.Arn"))
            );
            assert_eq!(num(&source["BatchSize"]), o.batch_size as u64, "{l}");
            assert_eq!(
                num(&source["ScalingConfig"]["MaximumConcurrency"]),
                (o.concurrency * ratio as usize).clamp(2, 1000) as u64,
                "{l}"
            );
            let granted = &t["Resources"]["SendPolicy"]["Properties"]["PolicyDocument"]
                ["Statement"][0]["Resource"];
            assert!(
                granted
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|r| tagged(r).map(|t| t.1) == Some(format!("{l}HighQueue.Arn"))),
                "SendPolicy lacks {l}HighQueue"
            );
            expected_queues.insert(format!("{l}HighQueue"));
        }
        expected_workers.insert(format!("{l}WorkerFunction"));
    }

    // The other way round: nothing in the template without its counterpart in the code.
    let of_type = |ty: &str| -> BTreeSet<String> {
        resources
            .iter()
            .filter(|(_, r)| r["Type"] == ty)
            .map(|(k, _)| k.as_str().unwrap().to_string())
            .collect()
    };
    // (and the scheduler function's on-failure destination)
    expected_queues.insert("ScheduleTickFailures".to_string());
    assert_eq!(of_type("AWS::SQS::Queue"), expected_queues);
    let functions = of_type("AWS::Serverless::Function");
    // Each function is built from its own crate's directory, so it carries only the features
    // that crate asks for (no SQLite in a Lambda binary).
    let binaries: BTreeSet<String> = functions
        .iter()
        .map(|f| {
            let binary = t["Resources"][f.as_str()]["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(
                t["Resources"][f.as_str()]["Properties"]["CodeUri"]
                    .as_str()
                    .map(str::to_string),
                Some(format!("functions/{binary}")),
                "{f}"
            );
            binary
        })
        .collect();
    let crates: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../functions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|name| !name.starts_with('.'))
            .collect();
    assert_eq!(
        binaries, crates,
        "every function crate is deployed, and only those"
    );
    assert_eq!(
        functions
            .iter()
            .filter(|f| f.ends_with("WorkerFunction"))
            .cloned()
            .collect::<BTreeSet<_>>(),
        expected_workers
    );
    // Every function logs to a log group of its own that the stack makes before the function
    // (the function names it, so it exists before the first invocation could make one without
    // a retention), named for the stack, keeping its logs for a set time.
    for f in &functions {
        let group = f.replace("Function", "LogGroup");
        let resource = &t["Resources"][group.as_str()];
        assert_eq!(resource["Type"], "AWS::Logs::LogGroup", "{f}");
        assert_eq!(
            tagged(&t["Resources"][f.as_str()]["Properties"]["LoggingConfig"]["LogGroup"]),
            Some(("!Ref".into(), group.clone())),
            "{f} logs to {group}"
        );
        assert_eq!(
            tagged(&resource["Properties"]["LogGroupName"]).map(|n| n.1),
            Some(format!("/aws/lambda/${{AWS::StackName}}-{f}")),
            "{group}"
        );
        assert_eq!(
            tagged(&resource["Properties"]["RetentionInDays"]).map(|n| n.1),
            Some("LogRetentionDays".into())
        );
    }

    // Every variable passed is one the configuration reads (the README's table lists them all).
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for (name, _) in env.as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if name.starts_with("CONVEYOR_") {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{name} is not a documented setting"
            );
        }
    }
    // (a function's own variables too)
    for f in &functions {
        let own = &t["Resources"][f.as_str()]["Properties"]["Environment"]["Variables"];
        for (name, _) in own.as_mapping().into_iter().flatten() {
            let name = name.as_str().unwrap();
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{f} passes {name}, which is not a documented setting"
            );
        }
    }
    // The webhook worker signs with the key the stack keeps in Secrets Manager.
    let webhook = &t["Resources"]["WebhookDeliverWorkerFunction"]["Properties"];
    assert_eq!(
        tagged(&webhook["Environment"]["Variables"]["CONVEYOR_WEBHOOK_SECRET_ID"]).map(|v| v.1),
        Some("WebhookSecret".into())
    );
    assert_eq!(
        t["Resources"]["WebhookSecret"]["Type"],
        "AWS::SecretsManager::Secret"
    );
    for needed in [
        "CONVEYOR_BACKEND",
        "CONVEYOR_TABLE",
        "CONVEYOR_EVENT_BUS",
        "CONVEYOR_QUEUE_PREFIX",
    ] {
        assert!(
            env.get(needed).is_some(),
            "the template does not pass {needed}"
        );
    }

    // Live updates: the WebSocket API has exactly the routes the `ws` entrypoint serves, all
    // on the `ws` function; `$connect` goes through the authorizer with `?token=`; the frames'
    // routes answer through their route responses; `notify` reads the job and log items of
    // the table's stream and may post to the API's connections.
    let of_kind =
        |ty: &str| -> Vec<&Value> { resources.values().filter(|r| r["Type"] == ty).collect() };
    let routes: BTreeSet<&str> = of_kind("AWS::ApiGatewayV2::Route")
        .iter()
        .map(|r| r["Properties"]["RouteKey"].as_str().unwrap())
        .collect();
    assert_eq!(
        routes,
        BTreeSet::from(shared::entrypoints::ws::ROUTES),
        "the WebSocket routes"
    );
    assert_eq!(
        t["Resources"]["WebSocketApi"]["Properties"]["RouteSelectionExpression"],
        "$request.body.action"
    );
    let integration = &t["Resources"]["WebSocketIntegration"]["Properties"];
    assert!(tagged(&integration["IntegrationUri"])
        .unwrap()
        .1
        .contains("${WsFunction.Arn}"));
    let connect = &t["Resources"]["WebSocketConnectRoute"]["Properties"];
    assert_eq!(connect["AuthorizationType"], "CUSTOM");
    let authorizer = &t["Resources"]["WebSocketAuthorizer"]["Properties"];
    assert!(tagged(&authorizer["AuthorizerUri"])
        .unwrap()
        .1
        .contains("${AuthorizerFunction.Arn}"));
    assert_eq!(
        authorizer["IdentitySource"][0],
        "route.request.querystring.token"
    );
    assert_eq!(
        of_kind("AWS::ApiGatewayV2::RouteResponse").len(),
        3,
        "subscribe, unsubscribe and $default answer the client"
    );
    let notify = &t["Resources"]["NotifyFunction"]["Properties"];
    let stream = &notify["Events"]["Stream"]["Properties"];
    assert_eq!(
        tagged(&stream["Stream"]).map(|s| s.1),
        Some("JobsTableV2.StreamArn".into())
    );
    let pattern: Value = serde_yaml::from_str(
        stream["FilterCriteria"]["Filters"][0]["Pattern"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&pattern["dynamodb"]["Keys"]["pk"]["S"]).unwrap(),
        serde_json::json!([{"prefix": "J#"}, {"prefix": "L#"}]),
        "job states and log lines"
    );
    // The stats function is the table's outbox: it reads the stream as it comes, gets only job
    // states, and may send to every queue.
    let stats = &t["Resources"]["StatsFunction"]["Properties"];
    let stream = &stats["Events"]["Stream"]["Properties"];
    assert_eq!(stream["MaximumBatchingWindowInSeconds"].as_u64(), Some(0));
    assert!(stats["Policies"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|p| tagged(p).is_some_and(|(_, v)| v == "SendPolicy")));
    // (the table's one index holds keys only: no queued, running or finished job is in it)
    let due = &t["Resources"]["JobsTableV2"]["Properties"]["GlobalSecondaryIndexes"][0];
    assert_eq!(due["Projection"]["ProjectionType"], "KEYS_ONLY");
    for f in ["NotifyFunction", "WsFunction"] {
        let policies = &t["Resources"][f]["Properties"]["Policies"];
        assert!(
            policies
                .as_sequence()
                .unwrap()
                .iter()
                .any(|p| tagged(p).is_some_and(|p| p.1 == "ManageConnectionsPolicy")),
            "{f} may post to connections"
        );
        assert!(t["Resources"][f]["Properties"]["Environment"]["Variables"]
            .get("CONVEYOR_WS_ENDPOINT")
            .is_some());
    }

    // Users' schedules: the api arms EventBridge Scheduler in the stack's group, each schedule
    // invoking the scheduler function through a role only EventBridge Scheduler may assume,
    // with permission to invoke that function and nothing else.
    let api_env = &t["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        tagged(&api_env["CONVEYOR_SCHEDULER_TARGET_ARN"]).map(|v| v.1),
        Some("SchedulerFunction.Arn".into())
    );
    assert_eq!(
        tagged(&api_env["CONVEYOR_SCHEDULER_ROLE_ARN"]).map(|v| v.1),
        Some("SchedulerInvokeRole.Arn".into())
    );
    assert_eq!(
        tagged(&api_env["CONVEYOR_SCHEDULE_GROUP"]).map(|v| v.1),
        Some("ScheduleGroup".into())
    );
    assert_eq!(
        t["Resources"]["ScheduleGroup"]["Type"],
        "AWS::Scheduler::ScheduleGroup"
    );
    let role = &t["Resources"]["SchedulerInvokeRole"]["Properties"];
    assert_eq!(
        role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "scheduler.amazonaws.com"
    );
    let invoke = &role["Policies"][0]["PolicyDocument"]["Statement"][0];
    assert_eq!(invoke["Action"], "lambda:InvokeFunction");
    assert_eq!(
        tagged(&invoke["Resource"]).map(|v| v.1),
        Some("SchedulerFunction.Arn".into())
    );

    // The table as the adapter makes it: TTL on `ttl`, its one index, kept on stack delete.
    let table = &t["Resources"]["JobsTableV2"];
    assert_eq!(table["DeletionPolicy"], "Retain");
    assert_eq!(
        table["Properties"]["TimeToLiveSpecification"]["AttributeName"],
        "ttl"
    );
    let indexes: BTreeSet<&str> = table["Properties"]["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| i["IndexName"].as_str().unwrap())
        .collect();
    assert_eq!(indexes, BTreeSet::from(["due"]));
    // The counts `stats` reads are kept by the stats function from the table's stream, job
    // items only, a failed record retried from where it failed.
    let stream = &t["Resources"]["StatsFunction"]["Properties"]["Events"]["Stream"];
    assert_eq!(stream["Type"], "DynamoDB");
    assert_eq!(
        tagged(&stream["Properties"]["Stream"]).map(|s| s.1),
        Some("JobsTableV2.StreamArn".into())
    );
    assert_eq!(
        stream["Properties"]["FunctionResponseTypes"][0],
        "ReportBatchItemFailures"
    );
    let filter = stream["Properties"]["FilterCriteria"]["Filters"][0]["Pattern"]
        .as_str()
        .expect("a filter pattern");
    let filter: serde_json::Value = serde_json::from_str(filter).expect("the pattern is JSON");
    assert_eq!(
        filter,
        serde_json::json!({"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "J#"}]}}}})
    );
    assert_eq!(
        table["Properties"]["StreamSpecification"]["StreamViewType"],
        "NEW_AND_OLD_IMAGES"
    );
    assert!(
        !text.contains("dynamodb:Scan") && !text.contains("DynamoDBCrudPolicy"),
        "no policy may allow a Scan"
    );
}

/// Every resource named in the account (not inside a parent of the stack's) and every event
/// schedule: the names of each.
fn account_names(t: &Value) -> Vec<(String, Value)> {
    let mut names = vec![];
    for (id, r) in t["Resources"].as_mapping().unwrap() {
        let id = id.as_str().unwrap();
        let key = match r["Type"].as_str().unwrap() {
            "AWS::SQS::Queue" => "QueueName",
            "AWS::Logs::LogGroup" => "LogGroupName",
            "AWS::SecretsManager::Secret"
            | "AWS::Scheduler::ScheduleGroup"
            | "AWS::Events::EventBus"
            | "AWS::ApiGatewayV2::Api" => "Name",
            _ => "",
        };
        if !key.is_empty() {
            names.push((id.to_string(), r["Properties"][key].clone()));
        }
        for (event, e) in r["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if e["Type"] == "ScheduleV2" || e["Type"] == "Schedule" {
                names.push((
                    format!("{id}.{}", event.as_str().unwrap()),
                    e["Properties"]["Name"].clone(),
                ));
            }
        }
    }
    names
}

#[test]
fn two_stacks_deploy_side_by_side_in_one_account_and_region() {
    // Every name the account holds is the stack's own (SAM would name an unnamed schedule after
    // its function's logical id, the same in every stack), and nothing needs concurrency the
    // account may not have to reserve.
    let (_, t) = template();
    let names = account_names(&t);
    assert!(names.len() > 20, "{names:?}");
    for (id, name) in names {
        let name = tagged(&name).map(|n| n.1).unwrap_or_default();
        assert!(
            name.contains("${AWS::StackName}"),
            "{id}: its name {name:?} is not the stack's own"
        );
    }
    for (id, r) in t["Resources"].as_mapping().unwrap() {
        assert!(
            r["Properties"]
                .get("ReservedConcurrentExecutions")
                .is_none(),
            "{id:?} reserves concurrency: a new account's minimum unreserved pool refuses it"
        );
    }
    assert!(t["Globals"]["Function"]
        .get("ReservedConcurrentExecutions")
        .is_none());
}

#[test]
fn every_alarm_notifies_the_alarm_topic_and_a_dead_letter_sets_one_off() {
    let (_, t) = template();
    assert_eq!(t["Parameters"]["AlarmTopicArn"]["Type"], "String");
    let alarms: Vec<(&Value, &Value)> = t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
        .collect();
    assert!(alarms.len() >= 6, "an alarm per dead-letter queue");
    for (id, alarm) in alarms {
        let p = &alarm["Properties"];
        let actions = serde_json::to_string(&p["AlarmActions"]).unwrap();
        assert!(
            actions.contains("HasAlarmTopic") && actions.contains("AlarmTopicArn"),
            "{id:?} notifies nothing: {actions}"
        );
        // (maintenance takes a dead letter off its queue within a minute: the depth would
        // almost never be seen above zero, what maintenance received there always is)
        if p["Namespace"] == "AWS/SQS" {
            assert_eq!(p["MetricName"], "NumberOfMessagesReceived", "{id:?}");
            assert_eq!(p["Statistic"], "Sum", "{id:?}");
            assert_eq!(p["ComparisonOperator"], "GreaterThanThreshold", "{id:?}");
            assert_eq!(num(&p["Threshold"]), 0, "{id:?}");
        }
    }
}

#[test]
fn the_gateway_lets_through_unauthenticated_only_what_the_router_serves_openly_and_throttles() {
    let (_, t) = template();
    let api = &t["Resources"]["HttpApi"]["Properties"];
    assert_eq!(api["Auth"]["DefaultAuthorizer"], "CredentialAuthorizer");
    let routes = &api["DefaultRouteSettings"];
    assert_eq!(
        tagged(&routes["ThrottlingRateLimit"]).map(|v| v.1),
        Some("ThrottleRateLimit".into())
    );
    assert_eq!(
        tagged(&routes["ThrottlingBurstLimit"]).map(|v| v.1),
        Some("ThrottleBurstLimit".into())
    );
    let mut open = BTreeSet::new();
    for (_, e) in t["Resources"]["ApiFunction"]["Properties"]["Events"]
        .as_mapping()
        .unwrap()
    {
        if e["Properties"]["Auth"]["Authorizer"] == "NONE" {
            open.insert(format!(
                "{} {}",
                e["Properties"]["Method"].as_str().unwrap(),
                e["Properties"]["Path"].as_str().unwrap()
            ));
        }
    }
    assert_eq!(
        open,
        BTreeSet::from([
            "GET /".to_string(),
            "GET /healthz".to_string(),
            "GET /v1/openapi.json".to_string(),
            "POST /v1/jobs/{id}/handler/{action}".to_string(),
        ])
    );
    // (an external handler's routes: the router checks their job token itself, outside the
    // credential check, and serves no other route under that path)
    let handler_routes: Vec<&str> = shared::entrypoints::http::routes()
        .filter(|(_, p)| p.contains("/handler/"))
        .map(|(m, p)| {
            assert_eq!(m, "post", "{p}");
            p
        })
        .collect();
    assert_eq!(
        handler_routes,
        [
            "/v1/jobs/{id}/handler/progress",
            "/v1/jobs/{id}/handler/heartbeat",
            "/v1/jobs/{id}/handler/complete"
        ]
    );
    // (the router serves those two to anyone too; `/` is the dashboard's page, which holds
    // no data and asks for the credential)
    for path in ["/healthz", "/v1/openapi.json"] {
        assert!(
            shared::entrypoints::http::OPEN_ROUTES.contains(&path),
            "{path}"
        );
    }
}

#[test]
fn make_deploy_refuses_a_stack_name_too_long_for_its_queues_before_sam_runs() {
    // GIVEN a `sam` on the PATH that records being run
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("sam-ran");
    let sam = dir.path().join("sam");
    std::fs::write(&sam, format!("#!/bin/sh\ntouch {}\n", ran.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sam, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let deploy = |stack: &str| {
        std::process::Command::new("make")
            .args([
                "-s",
                "deploy",
                &format!("STACK={stack}"),
                "REGION=eu-west-1",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .env("PATH", &path)
            .output()
            .expect("make runs")
    };
    // WHEN a deploy names a stack of 40 characters (its queues' prefix would be 41), and one
    // that is no stack name
    for (stack, says) in [
        ("a".repeat(40), "at most 39"),
        ("9-lives".to_string(), "starts with a letter"),
    ] {
        let out = deploy(&stack);
        // THEN it is refused, saying why, and nothing ran
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stack}: {stderr}");
        assert!(stderr.contains(says), "{stack}: {stderr}");
        assert!(!ran.exists(), "{stack}: sam ran");
    }
}

#[test]
fn a_schedule_tick_the_scheduler_function_fails_is_kept_for_maintenance_to_fire_again() {
    // EventBridge Scheduler invokes the function asynchronously: without an on-failure
    // destination a tick failing Lambda's retries would be dropped.
    let (_, t) = template();
    let config = &t["Resources"]["SchedulerFunction"]["Properties"]["EventInvokeConfig"];
    assert!(num(&config["MaximumRetryAttempts"]) <= 2);
    let failure = &config["DestinationConfig"]["OnFailure"];
    assert_eq!(failure["Type"], "SQS");
    assert_eq!(
        tagged(&failure["Destination"]).map(|d| d.1),
        Some("ScheduleTickFailures.Arn".into())
    );
    // (maintenance reads that queue: it is named to it, and it may receive and delete there)
    let maintenance = &t["Resources"]["MaintenanceFunction"]["Properties"];
    assert_eq!(
        tagged(&maintenance["Environment"]["Variables"]["CONVEYOR_TICK_FAILURES_QUEUE"])
            .map(|v| v.1),
        Some("ScheduleTickFailures.QueueName".into())
    );
    let granted =
        &t["Resources"]["DeadLetterPolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    assert!(granted["Resource"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|r| tagged(r).map(|r| r.1) == Some("ScheduleTickFailures.Arn".into())));
    assert!(maintenance["Policies"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|p| tagged(p).map(|p| p.1) == Some("DeadLetterPolicy".into())));
}

#[tokio::test]
async fn make_deploy_says_when_the_accounts_lambda_concurrency_is_below_what_the_stack_may_take() {
    // GIVEN what the stack may run at once: each worker queue's event source up to its
    // MaximumConcurrency, and one for each other function
    let (text, t) = template();
    let workers: u64 = text
        .lines()
        .filter_map(|l| l.split("MaximumConcurrency:").nth(1))
        .map(|n| {
            n.trim()
                .trim_end_matches('}')
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    let functions = t["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .collect::<Vec<_>>();
    let others = functions
        .iter()
        .filter(|(_, r)| {
            !r["Properties"]["Events"]
                .as_mapping()
                .is_some_and(|e| e.values().any(|e| e["Type"] == "SQS"))
        })
        .count() as u64;
    let want = workers + others;
    // AND Lambda's account settings (GetAccountSettings) as an account with `quota` answers
    let account = |quota: u64| async move {
        let app = axum::Router::new().route(
            "/2016-08-19/account-settings",
            axum::routing::get(move || async move {
                axum::Json(serde_json::json!({
                    "AccountLimit": {
                        "TotalCodeSize": 80530636800u64, "CodeSizeUnzipped": 262144000,
                        "CodeSizeZipped": 52428800, "ConcurrentExecutions": quota,
                        "UnreservedConcurrentExecutions": quota,
                    },
                    "AccountUsage": { "TotalCodeSize": 0, "FunctionCount": 0 },
                }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    };
    let check = |endpoint: String| async move {
        tokio::process::Command::new("make")
            .args([
                "-s",
                "deploy-check",
                "STACK=conveyor-ci",
                "REGION=eu-west-1",
                "ARCH=x86_64",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .env("AWS_ENDPOINT_URL_LAMBDA", endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .output()
            .await
            .expect("make runs")
    };

    // WHEN the checks a deploy makes first run against a new account's quota of 10
    let out = check(account(10).await).await;
    // THEN it says what the account runs, what the stack may take and where to ask for more,
    // and the deploy would go on
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("at most 10 Lambda invocations at once"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("this stack may take {want}")),
        "{want}: {stderr}"
    );
    assert!(stderr.contains("Service Quotas"), "{stderr}");
    assert!(stdout.contains("ready"), "{stdout}");

    // WHEN the account's quota is 1,000
    let out = check(account(1000).await).await;
    // THEN it has nothing to note
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("Note:"), "{stderr}");
}
