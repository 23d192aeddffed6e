//! External job types: each attempt of a declared type (`domain::ExternalType`) is one signed
//! request to the team's own code, which answers with the result, or says it will complete the
//! job later. The request carries a job token, with which the handler reports progress and
//! heartbeats, learns of a cancel, and posts a late result (`/v1/jobs/{id}/handler/…`).
//!
//! The request: `POST <url>` with the JSON body `{"job": {"id", "type", "tenant", "attempt",
//! "payload", "deadline"}, "token", "api"}` (`api`: where the token's routes are), signed as
//! `webhook.deliver` signs (`X-Conveyor-Signature`, with the tenant's webhook secret). The
//! answer ends the attempt: 2xx with JSON, succeeded with that result (202: running on, to be
//! completed with the token before the deadline); 408, 429 and 5xx, or no answer in time, a
//! retryable failure; any other 4xx, failed for good, with the body as the error.

use super::webhook::{sign_all, signing_keys, Signed};
use super::{status_is_retryable, JobContext, JobHandler, JobOptions, Registration, WebhookKey};
use crate::domain::{
    ExternalType, HandlerTarget, JobError, JobId, JobType, PauseScope, Tenant, ValidationError,
};
use crate::outbound::{refusal, Network, Outbound, OutboundPolicy};
use crate::ports::{StoreError, TypeStore};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The queue every external type's jobs go through, and the internal type that names it.
pub const EXTERNAL_QUEUE_TYPE: &str = "conveyor.external";
/// How long a worker or the API keeps a declaration it read.
const KEPT_FOR: Duration = Duration::from_secs(5);
/// Declarations (or their absence) kept at most, before the stale ones are let go.
const KNOWN_MAX: usize = 10_000;
/// The step under which a late result of run `n` is recorded: `conveyor:result:<n>`.
pub const RESULT_STEP: &str = "conveyor:result:";
/// Most bytes of a handler's answer kept as a failure's message.
const ERROR_BODY_MAX: usize = 4096;
/// A job token outlives its attempt's deadline by this much (a late result races the deadline).
const TOKEN_GRACE: chrono::Duration = chrono::Duration::seconds(60);
/// How long an attempt asked to cancel waits for its handler to stop of its own accord (its
/// heartbeats and progress reports answer `cancel_requested` meanwhile) before it ends
/// cancelled without it.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// A declaration as read (its registration, `None` for none), and when.
type Known = (Instant, Option<Arc<Registration>>);

/// What a Lambda function answered a synchronous invocation: its payload, and, when it raised
/// instead of returning, Lambda's `FunctionError` (`Unhandled`).
pub struct FunctionAnswer {
    pub payload: Vec<u8>,
    pub raised: Option<String>,
}

/// Invoking a Lambda function: the AWS backend's worker (`adapters::aws::LambdaFunctions`).
#[async_trait]
pub trait FunctionCaller: Send + Sync {
    /// Invoke `arn` once, synchronously, with `body`, giving it `timeout` to answer (a failure
    /// to reach it, or a refusal, is the attempt's error: retryable or not as Lambda's is).
    async fn invoke(
        &self,
        arn: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<FunctionAnswer, JobError>;
}

/// The Lambda functions external types may name (`CONVEYOR_LAMBDA_HANDLERS`): ARN patterns in
/// which `*` stands for any run of characters, as in an IAM policy's resources. The worker's
/// role may invoke those and no others; a declaration naming another is refused at once.
#[derive(Debug, Clone, Default)]
pub struct LambdaHandlers {
    patterns: Vec<String>,
}

impl LambdaHandlers {
    /// The patterns of a comma-separated list (blanks dropped).
    pub fn parse(list: &str) -> Self {
        Self {
            patterns: list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    pub fn allows(&self, arn: &str) -> bool {
        self.patterns.iter().any(|p| wildcard_match(p, arn))
    }

    fn describe(&self) -> String {
        if self.patterns.is_empty() {
            "none (CONVEYOR_LAMBDA_HANDLERS is empty)".into()
        } else {
            self.patterns.join(", ")
        }
    }
}

/// Whether `text` matches `pattern`, whose `*`s stand for any run of characters.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What an external type's calls need besides the declaration: the signing key, the outbound
/// guard, and where handlers find the API.
pub struct ExternalCalls {
    store: Arc<dyn TypeStore>,
    secret: Option<WebhookKey>,
    policy: OutboundPolicy,
    outbound: OnceLock<Arc<Outbound>>,
    /// Handlers on loopback allowed (dev mode, which serves only loopback).
    loopback: std::sync::atomic::AtomicBool,
    api: Mutex<Option<String>>,
    /// On the AWS backend: the Lambda functions a type may name, and (in what runs jobs) the
    /// client that invokes them. Elsewhere a Lambda handler is refused.
    lambda: OnceLock<(LambdaHandlers, Option<Arc<dyn FunctionCaller>>)>,
    /// Declarations read, by (tenant, name), and when.
    known: Mutex<HashMap<(Tenant, JobType), Known>>,
}

impl ExternalCalls {
    pub fn new(
        store: Arc<dyn TypeStore>,
        secret: Option<WebhookKey>,
        policy: OutboundPolicy,
        api: Option<String>,
    ) -> Self {
        Self {
            store,
            secret,
            policy,
            outbound: OnceLock::new(),
            loopback: false.into(),
            api: Mutex::new(api),
            lambda: OnceLock::new(),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Let handlers on loopback be called (dev mode: the API serves only loopback, so the
    /// examples run against it). Before the first call.
    pub fn allow_loopback(&self) {
        self.loopback
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Let types name the Lambda functions `handlers` allows (the AWS backend), invoked by
    /// `caller` where jobs run (none where they are only declared and submitted).
    pub fn allow_lambda(&self, handlers: LambdaHandlers, caller: Option<Arc<dyn FunctionCaller>>) {
        let _ = self.lambda.set((handlers, caller));
    }

    /// Where handlers reach the API, unless configured (the local runtime's own address).
    pub fn api_at(&self, url: String) {
        self.api.lock().unwrap().get_or_insert(url);
    }

    fn outbound(&self) -> &Arc<Outbound> {
        self.outbound.get_or_init(|| {
            let mut policy = self.policy.clone();
            if self.loopback.load(std::sync::atomic::Ordering::Acquire) {
                for net in ["127.0.0.0/8", "::1/128"] {
                    policy
                        .allow
                        .push(Network::parse(net).expect("a valid network"));
                }
            }
            Arc::new(Outbound::new(policy))
        })
    }

    /// Whether `target` may be called: a URL the outbound guard lets through, or on the AWS
    /// backend a Lambda function `CONVEYOR_LAMBDA_HANDLERS` allows.
    pub fn check(&self, target: &HandlerTarget) -> Result<(), ValidationError> {
        match target {
            HandlerTarget::Url(url) => {
                let url = reqwest::Url::parse(url)
                    .map_err(|e| ValidationError::new("handler.url", e.to_string()))?;
                self.outbound()
                    .policy()
                    .check_url(&url)
                    .map_err(|r| ValidationError::new("handler.url", r.to_string()))
            }
            HandlerTarget::Lambda(arn) => self.lambda_allowed(arn).map(|_| ()),
        }
    }

    /// The invoker for `arn`, if the deployment may invoke it (its caller `None` where jobs
    /// are not run).
    fn lambda_allowed(
        &self,
        arn: &str,
    ) -> Result<Option<&Arc<dyn FunctionCaller>>, ValidationError> {
        let Some((handlers, caller)) = self.lambda.get() else {
            return Err(ValidationError::new(
                "handler.lambda",
                "a Lambda handler is for the AWS backend; here, give a handler URL",
            ));
        };
        if !handlers.allows(arn) {
            return Err(ValidationError::new(
                "handler.lambda",
                format!(
                    "{arn} is not among the functions this deployment may invoke: {} (CONVEYOR_LAMBDA_HANDLERS)",
                    handlers.describe()
                ),
            ));
        }
        Ok(caller.as_ref())
    }

    /// The registration `tenant`'s jobs of `name` run under, if the type is declared for it.
    pub async fn registration(
        self: &Arc<Self>,
        tenant: &Tenant,
        name: &JobType,
    ) -> Result<Option<Arc<Registration>>, StoreError> {
        let key = (tenant.clone(), name.clone());
        if let Some((at, known)) = self.known.lock().unwrap().get(&key) {
            if at.elapsed() < KEPT_FOR {
                return Ok(known.clone());
            }
        }
        let declared = self.store.type_for(tenant, name).await?;
        let registration = declared.map(|d| Arc::new(self.registration_of(tenant, d)));
        let mut known = self.known.lock().unwrap();
        if known.len() >= KNOWN_MAX {
            // (names asked for that no one declared must not grow it without end)
            known.retain(|_, (at, _)| at.elapsed() < KEPT_FOR);
        }
        known.insert(key, (Instant::now(), registration.clone()));
        Ok(registration)
    }

    /// Forget what was read of a type (it was declared again, or deleted, here).
    pub fn forget(&self, scope: &PauseScope, name: &JobType) {
        self.known
            .lock()
            .unwrap()
            .retain(|(tenant, n), _| !(n == name && scope.covers(tenant)));
    }

    fn registration_of(self: &Arc<Self>, tenant: &Tenant, declared: ExternalType) -> Registration {
        Registration {
            job_type: declared.name.clone(),
            options: JobOptions {
                max_attempts: declared.max_attempts,
                backoff: declared.backoff,
                timeout: declared.timeout(),
                concurrency: declared.concurrency as usize,
                rate: declared.rate.map(|(per, period_ms)| crate::domain::Rate {
                    per,
                    period: Duration::from_millis(period_ms),
                }),
                execution: super::Execution::Task,
                ..JobOptions::default()
            },
            tenant: Some((tenant.clone(), declared.concurrency)),
            // (where jobs only get submitted, the call is left out: `runs`)
            handler: Arc::new(super::runs(ExternalHandler {
                declared,
                calls: self.clone(),
            })),
        }
    }
}

/// A job token: one run of one job, until a moment, signed with a key only the deployment has.
/// `cjt_<job id>_<run>_<expiry, unix seconds>_<hex HMAC-SHA256>`; the MAC also covers the job's
/// tenant, read from the job when the token is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobToken {
    pub job_id: JobId,
    pub run: u32,
    pub expires: chrono::DateTime<chrono::Utc>,
    mac: String,
}

fn token_mac(master: &str, tenant: &Tenant, job_id: JobId, run: u32, expires: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(master.as_bytes()).expect("any key length");
    mac.update(b"conveyor-job-token\0");
    mac.update(format!("{tenant}\0{job_id}\0{run}\0{expires}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl JobToken {
    pub fn mint(
        master: &str,
        tenant: &Tenant,
        job_id: JobId,
        run: u32,
        expires: chrono::DateTime<chrono::Utc>,
    ) -> String {
        let exp = expires.timestamp();
        format!(
            "cjt_{job_id}_{run}_{exp}_{}",
            token_mac(master, tenant, job_id, run, exp)
        )
    }

    /// The token's claims, unchecked (`None`: not a job token at all).
    pub fn parse(token: &str) -> Option<Self> {
        let mut parts = token.strip_prefix("cjt_")?.split('_');
        let job_id = JobId::parse(parts.next()?).ok()?;
        let run = parts.next()?.parse().ok()?;
        let expires = chrono::DateTime::from_timestamp(parts.next()?.parse().ok()?, 0)?;
        let mac = parts.next()?.to_string();
        parts.next().is_none().then_some(Self {
            job_id,
            run,
            expires,
            mac,
        })
    }

    /// Whether the deployment made this token for a job of `tenant`, and it has not expired.
    pub fn verify(
        &self,
        master: &str,
        tenant: &Tenant,
        now: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let expected = token_mac(
            master,
            tenant,
            self.job_id,
            self.run,
            self.expires.timestamp(),
        );
        // (compared in constant time)
        let same = expected.len() == self.mac.len()
            && expected
                .bytes()
                .zip(self.mac.bytes())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0;
        same && now < self.expires
    }
}

/// An external type's handler: the call.
pub struct ExternalHandler {
    declared: ExternalType,
    calls: Arc<ExternalCalls>,
}

impl ExternalHandler {
    /// Wait for the result a handler that answered 202 posts with its token (recorded as the
    /// step `conveyor:result:<run>`). Asked to cancel, the attempt gives the handler
    /// `CANCEL_GRACE` to see it and stop, then ends cancelled whatever it posts.
    async fn completion(&self, ctx: &JobContext) -> Result<Value, JobError> {
        let name = format!("{RESULT_STEP}{}", ctx.run());
        let mut wait = Duration::from_millis(100);
        let mut cancelled_at: Option<Instant> = None;
        loop {
            let steps = ctx.recorded_steps().await?;
            if let Some(done) = steps.into_iter().find(|s| s.name == name) {
                if cancelled_at.is_some() {
                    return Err(JobError::cancelled());
                }
                return match (done.result.get("result"), done.result.get("error")) {
                    (Some(result), _) => Ok(result.clone()),
                    (None, Some(error)) => Err(handler_error(error)),
                    _ => Err(JobError::permanent(
                        "the handler's completion holds no result",
                    )),
                };
            }
            if cancelled_at.is_some_and(|at| at.elapsed() >= CANCEL_GRACE) {
                return Err(JobError::cancelled());
            }
            if cancelled_at.is_none() {
                tokio::select! {
                    () = ctx.cancelled() => {
                        cancelled_at = Some(Instant::now());
                        wait = Duration::from_millis(100);
                    }
                    () = tokio::time::sleep(wait) => {}
                }
            } else {
                tokio::time::sleep(wait).await;
            }
            wait = (wait * 2).min(Duration::from_secs(1));
        }
    }
}

/// A failure a handler reported: `{"message", "retryable"?}` (or any JSON, as its message).
pub fn handler_error(error: &Value) -> JobError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string());
    let retryable = error.get("retryable").and_then(Value::as_bool) == Some(true);
    JobError::with_kind("handler", message, retryable)
}

/// How a call ended, short of a failure: with the result, or with the handler working on.
enum Answered {
    Result(Value),
    Later,
}

/// Where one attempt's call goes, checked.
enum Call<'a> {
    Url(reqwest::Url),
    Lambda(&'a str, &'a Arc<dyn FunctionCaller>),
}

impl ExternalHandler {
    /// The signed POST to `url`, its answer read as the call's end.
    async fn post(
        &self,
        url: &reqwest::Url,
        body: Vec<u8>,
        signature: String,
        ctx: &JobContext,
    ) -> Result<(Answered, String), JobError> {
        let job_id = ctx.job_id().to_string();
        let response = self
            .calls
            .outbound()
            .client()
            .post(url.clone())
            .timeout(self.declared.timeout())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-conveyor-signature", signature)
            .header("x-conveyor-job-id", &job_id)
            .header("x-conveyor-attempt", ctx.attempt().to_string())
            .body(body)
            .send()
            .await
            .map_err(|e| match refusal(&e) {
                Some(r) => JobError::with_kind("outbound_refused", format!("{url}: {r}"), false),
                None if e.is_timeout() => self.no_answer(),
                None => JobError::retryable(format!("POST {url}: {e}")),
            })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| JobError::retryable(format!("reading the handler's answer: {e}")))?;
        let answered = match status {
            202 => Answered::Later,
            200..=299 if text.trim().is_empty() => Answered::Result(Value::Null),
            200..=299 => Answered::Result(serde_json::from_str(&text).map_err(|e| {
                JobError::permanent(format!("the handler's answer is not JSON: {e}"))
            })?),
            s if status_is_retryable(s) => {
                return Err(JobError::retryable(format!(
                    "the handler answered {status}: {}",
                    clip(&text)
                )))
            }
            _ => {
                return Err(JobError::with_kind(
                    "handler",
                    format!("the handler answered {status}: {}", clip(&text)),
                    false,
                ))
            }
        };
        Ok((answered, format!("POST {url} -> {status}")))
    }

    /// The synchronous invocation of a Lambda function, its returned value read as the call's
    /// end: `{"result": …}` succeeded, `{"accepted": true}` to be completed with the token,
    /// `{"error": {"message", "retryable"?}}` failed; a function that raised, a retryable
    /// failure (as an HTTP handler's 500).
    async fn invoke(
        &self,
        arn: &str,
        caller: &Arc<dyn FunctionCaller>,
        body: Vec<u8>,
    ) -> Result<(Answered, String), JobError> {
        let answer = caller.invoke(arn, body, self.declared.timeout()).await?;
        let text = String::from_utf8_lossy(&answer.payload);
        if let Some(kind) = answer.raised {
            return Err(JobError::retryable(format!(
                "the function raised ({kind}): {}",
                clip(&text)
            )));
        }
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| JobError::permanent(format!("the function's answer is not JSON: {e}")))?;
        let answered = match (
            value.get("result"),
            value.get("error"),
            value.get("accepted"),
        ) {
            (Some(result), None, None) => Answered::Result(result.clone()),
            (None, Some(error), None) => return Err(handler_error(error)),
            (None, None, Some(Value::Bool(true))) => Answered::Later,
            _ => {
                return Err(JobError::permanent(format!(
                    "the function's answer holds none of result, error or accepted (true): {}",
                    clip(&text)
                )))
            }
        };
        Ok((answered, format!("invoke {arn}")))
    }

    fn no_answer(&self) -> JobError {
        JobError::retryable(format!(
            "the handler did not answer within {} ms",
            self.declared.timeout_ms
        ))
    }

    /// Where this attempt's call goes, if it may go there now.
    fn target(&self) -> Result<Call<'_>, JobError> {
        match &self.declared.handler {
            HandlerTarget::Url(raw) => {
                let url = reqwest::Url::parse(raw)
                    .map_err(|e| JobError::permanent(format!("the handler's URL: {e}")))?;
                self.calls
                    .outbound()
                    .policy()
                    .check_url(&url)
                    .map_err(|r| {
                        JobError::with_kind("outbound_refused", format!("{url}: {r}"), false)
                    })?;
                Ok(Call::Url(url))
            }
            HandlerTarget::Lambda(arn) => {
                let caller = self
                    .calls
                    .lambda_allowed(arn)
                    .map_err(|e| JobError::with_kind("outbound_refused", e.message, false))?
                    .ok_or_else(|| {
                        JobError::permanent("this runtime does not invoke Lambda functions")
                    })?;
                Ok(Call::Lambda(arn, caller))
            }
        }
    }
}

#[async_trait]
impl JobHandler for ExternalHandler {
    async fn run(&self, ctx: JobContext, payload: Value) -> Result<Value, JobError> {
        let target = self.target()?;
        let (master, secrets) = signing_keys(
            self.calls.secret.as_ref(),
            &ctx,
            "calls to external handlers",
        )
        .await?;
        let tenant = ctx
            .tenant()
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| Tenant::parse("default").expect("a valid tenant"));
        let deadline = chrono::Utc::now()
            + chrono::Duration::from_std(self.declared.timeout()).unwrap_or(chrono::Duration::MAX);
        let token = JobToken::mint(
            &master,
            &tenant,
            ctx.job_id(),
            ctx.run(),
            deadline + TOKEN_GRACE,
        );
        let api = self.calls.api.lock().unwrap().clone();
        let body = serde_json::to_vec(&json!({
            "job": {
                "id": ctx.job_id(),
                "type": ctx.job_type(),
                "tenant": tenant,
                "attempt": ctx.attempt(),
                "payload": payload,
                "deadline": deadline,
            },
            "token": token,
            "api": api,
        }))
        .map_err(|e| JobError::permanent(e.to_string()))?;
        let started = Instant::now();
        let call = async {
            match target {
                Call::Url(url) => {
                    let job_id = ctx.job_id().to_string();
                    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
                    let signature = sign_all(
                        &secrets,
                        Signed {
                            timestamp: chrono::Utc::now().timestamp(),
                            job_id: &job_id,
                            attempt: ctx.attempt(),
                            body: &body,
                        },
                    );
                    self.post(&url, body, signature, &ctx).await
                }
                // (IAM says who may invoke a function: the request is not signed)
                Call::Lambda(arn, caller) => self.invoke(arn, caller, body).await,
            }
        };
        // (asked to cancel, the call is given `CANCEL_GRACE` to answer, then dropped)
        let cancelled = async {
            ctx.cancelled().await;
            tokio::time::sleep(CANCEL_GRACE).await;
        };
        let (answered, what) = tokio::select! {
            () = cancelled => return Err(JobError::cancelled()),
            answered = call => answered?,
        };
        ctx.log(format!("{what} in {} ms", started.elapsed().as_millis()))
            .await;
        if ctx.is_cancelled() {
            return Err(JobError::cancelled());
        }
        match answered {
            Answered::Later => self.completion(&ctx).await,
            Answered::Result(result) => Ok(result),
        }
    }
}

fn clip(text: &str) -> &str {
    match text.char_indices().nth(ERROR_BODY_MAX) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// The internal type whose queue carries every external type's jobs: never submitted itself.
pub struct ExternalQueue;

#[async_trait]
impl JobHandler for ExternalQueue {
    fn validate(&self, _payload: &Value) -> Result<(), ValidationError> {
        Err(ValidationError::new(
            "type",
            format!(
                "{EXTERNAL_QUEUE_TYPE} is the queue of the external types, not a type to submit"
            ),
        ))
    }

    async fn run(&self, _ctx: JobContext, _payload: Value) -> Result<Value, JobError> {
        Err(JobError::permanent(format!(
            "{EXTERNAL_QUEUE_TYPE} is not a type to run"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_token_holds_for_its_job_run_and_tenant_until_it_expires() {
        let (tenant, other) = (
            Tenant::parse("acme").unwrap(),
            Tenant::parse("globex").unwrap(),
        );
        let job = JobId::new();
        let now = chrono::Utc::now();
        let token = JobToken::mint(
            "master",
            &tenant,
            job,
            2,
            now + chrono::Duration::seconds(30),
        );
        let parsed = JobToken::parse(&token).unwrap();
        assert_eq!((parsed.job_id, parsed.run), (job, 2));
        assert!(parsed.verify("master", &tenant, now));
        // (another tenant's job, another key, after its expiry: refused)
        assert!(!parsed.verify("master", &other, now));
        assert!(!parsed.verify("other key", &tenant, now));
        assert!(!parsed.verify("master", &tenant, now + chrono::Duration::seconds(31)));
        // (a claim changed: the MAC no longer holds)
        let forged = token.replacen("_2_", "_3_", 1);
        assert!(!JobToken::parse(&forged)
            .unwrap()
            .verify("master", &tenant, now));
        for bad in ["", "cjt_", "Bearer x", &format!("{token}_x")] {
            assert!(JobToken::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn lambda_handlers_allow_the_functions_their_patterns_match() {
        let handlers = LambdaHandlers::parse(
            "arn:aws:lambda:*:*:function:conveyor-handler-*, arn:aws:lambda:eu-west-1:123:function:billing",
        );
        for arn in [
            "arn:aws:lambda:us-east-1:000000000000:function:conveyor-handler-py",
            "arn:aws:lambda:eu-west-1:123:function:conveyor-handler-",
            "arn:aws:lambda:eu-west-1:123:function:billing",
        ] {
            assert!(handlers.allows(arn), "{arn}");
        }
        for arn in [
            "arn:aws:lambda:us-east-1:000000000000:function:conveyor-api",
            "arn:aws:lambda:eu-west-1:123:function:billing-2",
            "arn:aws:lambda:eu-west-1:456:function:billing",
            "arn:aws:lambda:us-east-1:0:function:x:conveyor-handler-y",
        ] {
            assert!(!handlers.allows(arn), "{arn}");
        }
        assert!(!LambdaHandlers::parse(" , ").allows("arn:aws:lambda:r:a:function:f"));
        assert!(wildcard_match("a*b*c", "aXbYc") && !wildcard_match("a*b*c", "aXcYb"));
        assert!(
            wildcard_match("*", "") && wildcard_match("ab", "ab") && !wildcard_match("ab", "abc")
        );
    }
}
