//! Every change of a job's status: each a pure function from one `Job` to the next, refused
//! with a `TransitionError` where the current status does not allow it.

use super::*;

impl Job {
    /// A fresh job: `queued`, or `scheduled` when its run time is beyond the queue's delay limit.
    pub fn create(new: NewJob, now: DateTime<Utc>) -> Job {
        let status = if new.run_at > after(now, MAX_QUEUE_DELAY) {
            JobStatus::Scheduled
        } else {
            JobStatus::Queued
        };
        Job {
            id: JobId::for_tenant(&new.tenant),
            tenant: new.tenant,
            job_type: new.job_type,
            status,
            priority: new.priority,
            payload: new.payload,
            attempt: 0,
            runs: 0,
            max_attempts: new.max_attempts,
            backoff: new.backoff,
            timeout_ms: new.timeout.as_millis() as u64,
            retention_secs: new.retention.as_secs(),
            progress: None,
            result: None,
            error: None,
            idempotency_key: new.idempotency_key,
            request_fingerprint: new.request_fingerprint,
            concurrency_key: None,
            tenant_max_running: None,
            batch_id: None,
            depends_on: vec![],
            on_dependency_failure: DependencyFailure::Cancel,
            cancel_requested: false,
            holds_slot: false,
            created_at: now,
            queued_at: now,
            run_at: new.run_at.max(now),
            started_at: None,
            finished_at: None,
            heartbeat_at: None,
            expires_at: None,
            updated_at: now,
            version: 1,
            replay_of: None,
            replayed_as: vec![],
        }
    }

    /// This job, naming `replay` as made by replaying it (a change of no state: its status,
    /// attempt and run stay).
    pub fn replayed_as(&self, replay: JobId, now: DateTime<Utc>) -> Job {
        let mut replayed_as = self.replayed_as.clone();
        replayed_as.push(replay);
        let over = replayed_as.len().saturating_sub(super::REPLAYS_KEPT);
        replayed_as.drain(..over);
        Job {
            replayed_as,
            updated_at: now,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// The job as another deployment takes it in (an import): what ended stays as it ended,
    /// never to run again; a running job was cut off where it ran, so it is queued again
    /// without using up that attempt (or ends cancelled, if a cancel was asked for); a queued
    /// one is queued from now (its message is sent anew). It holds no quota slot and is no
    /// batch's member there (a batch stays where it was made).
    pub fn imported(self, now: DateTime<Utc>) -> Job {
        let job = match self.interrupt(now) {
            Ok(requeued) if requeued.status == JobStatus::Queued => Job {
                error: Some(JobError::with_kind(
                    "interrupted",
                    format!(
                        "attempt {} was running where the job was exported from; it does not count",
                        self.attempt
                    ),
                    true,
                )),
                ..requeued
            },
            Ok(cancelled) => cancelled,
            Err(_) if self.status == JobStatus::Queued => Job {
                queued_at: now,
                updated_at: now,
                ..self
            },
            Err(_) => self,
        };
        Job {
            holds_slot: false,
            batch_id: None,
            ..job
        }
    }

    pub fn expected(&self) -> Expected {
        Expected {
            status: self.status,
            attempt: self.attempt,
            version: self.version,
            last_heartbeat: None,
        }
    }

    /// `expected`, and also that no heartbeat arrived since this copy was read.
    pub fn expected_silent(&self) -> Expected {
        Expected {
            last_heartbeat: Some(self.due_at()),
            ..self.expected()
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The time the maintenance index sorts this job by in its status: when a queued job's
    /// message is due, when a scheduled job runs, when maintenance next looks at a waiting job's
    /// dependencies, a running job's last heartbeat, and when a finished job expires.
    pub fn due_at(&self) -> DateTime<Utc> {
        match self.status {
            JobStatus::Waiting => self.run_at,
            JobStatus::Queued => self.run_at.max(self.queued_at),
            JobStatus::Scheduled => self.run_at,
            JobStatus::Running => self
                .heartbeat_at
                .or(self.started_at)
                .unwrap_or(self.queued_at),
            _ => self.expires_at.unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// The delay to give the queue message for a `queued` job, `None` for any other status.
    pub fn dispatch_delay(&self, now: DateTime<Utc>) -> Option<Duration> {
        (self.status == JobStatus::Queued)
            .then(|| (self.run_at - now).to_std().unwrap_or(Duration::ZERO))
    }

    fn next(&self, status: JobStatus, now: DateTime<Utc>) -> Job {
        Job {
            status,
            version: self.version + 1,
            updated_at: now,
            ..self.clone()
        }
    }

    fn finished(&self, status: JobStatus, now: DateTime<Utc>) -> Job {
        Job {
            finished_at: Some(now),
            expires_at: Some(after(now, Duration::from_secs(self.retention_secs))),
            ..self.next(status, now)
        }
    }

    /// A new job that waits for `parents` to end (`waiting`; maintenance first looks at it
    /// after `DEPENDENCY_RECHECK_MIN`).
    pub fn waiting_for(self, parents: Vec<JobId>, on_failure: DependencyFailure) -> Job {
        Job {
            status: JobStatus::Waiting,
            run_at: self.created_at + DEPENDENCY_RECHECK_MIN,
            depends_on: parents,
            on_dependency_failure: on_failure,
            ..self
        }
    }

    /// A waiting job, decided from how the jobs it depends on stand (`None`: gone): `queued`
    /// once all succeeded (with `DependencyFailure::Run`, once all ended); `cancelled` as soon as
    /// one failed, died, was cancelled or is gone (with `Cancel`). `None` while it must wait.
    pub fn settle_dependencies(
        &self,
        parents: &[(JobId, Option<JobStatus>)],
        now: DateTime<Utc>,
    ) -> Option<Job> {
        if self.status != JobStatus::Waiting {
            return None;
        }
        let unsuccessful = parents
            .iter()
            .find(|(_, s)| s.is_none_or(|s| s.is_terminal() && s != JobStatus::Succeeded));
        if let (Some((id, status)), DependencyFailure::Cancel) =
            (unsuccessful, self.on_dependency_failure)
        {
            let how = status.map_or("is gone".to_string(), |s| format!("ended {s}"));
            return Some(Job {
                error: Some(JobError::with_kind(
                    "dependency",
                    format!("job {id}, which this one depends on, {how}"),
                    false,
                )),
                ..self.finished(JobStatus::Cancelled, now)
            });
        }
        if parents
            .iter()
            .all(|(_, s)| s.is_none_or(|s| s.is_terminal()))
        {
            return Some(Job {
                run_at: now,
                queued_at: now,
                ..self.next(JobStatus::Queued, now)
            });
        }
        None
    }

    /// A waiting job maintenance looked at and found still waiting: it looks again after as long
    /// as the job has waited (at least `DEPENDENCY_RECHECK_MIN`).
    pub fn recheck_later(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Waiting {
            return Err(TransitionError {
                action: "recheck",
                from: self.status,
            });
        }
        Ok(Job {
            run_at: now + (now - self.created_at).max(DEPENDENCY_RECHECK_MIN),
            ..self.next(JobStatus::Waiting, now)
        })
    }

    /// queued → running: a worker takes the job for attempt `attempt + 1`.
    pub fn start(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Queued {
            return Err(TransitionError {
                action: "start",
                from: self.status,
            });
        }
        Ok(Job {
            attempt: self.attempt + 1,
            runs: self.runs + 1,
            started_at: Some(now),
            heartbeat_at: Some(now),
            progress: None,
            ..self.next(JobStatus::Running, now)
        })
    }

    /// running → succeeded | cancelled | queued/scheduled (retry) | failed | dead.
    /// `jitter` is a uniform sample in `[0, 1)` for the retry delay.
    pub fn finish(
        &self,
        outcome: Outcome,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Running {
            return Err(TransitionError {
                action: "finish",
                from: self.status,
            });
        }
        Ok(match outcome {
            Outcome::Succeeded(result) => Job {
                result: Some(result),
                error: None,
                ..self.finished(JobStatus::Succeeded, now)
            },
            Outcome::Failed(_) if self.cancel_requested => Job {
                error: Some(JobError::cancelled()),
                ..self.finished(JobStatus::Cancelled, now)
            },
            Outcome::Failed(error) if error.kind == "cancelled" => Job {
                error: Some(error),
                ..self.finished(JobStatus::Cancelled, now)
            },
            Outcome::Failed(error) if error.retryable && self.attempt < self.max_attempts => {
                let run_at = after(now, self.backoff.delay(self.attempt, jitter));
                let status = if run_at > after(now, MAX_QUEUE_DELAY) {
                    JobStatus::Scheduled
                } else {
                    JobStatus::Queued
                };
                Job {
                    error: Some(error),
                    run_at,
                    queued_at: now,
                    heartbeat_at: None,
                    ..self.next(status, now)
                }
            }
            Outcome::Failed(error) => {
                let status = if error.retryable {
                    JobStatus::Dead
                } else {
                    JobStatus::Failed
                };
                Job {
                    error: Some(error),
                    ..self.finished(status, now)
                }
            }
        })
    }

    /// Cancel on request: a waiting job ends at once; a running one is asked to stop
    /// (`cancel_requested`) and ends `cancelled` when its handler notices.
    pub fn cancel(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::Waiting | JobStatus::Queued | JobStatus::Scheduled => Ok(Job {
                error: Some(JobError::cancelled()),
                ..self.finished(JobStatus::Cancelled, now)
            }),
            JobStatus::Running if !self.cancel_requested => Ok(Job {
                cancel_requested: true,
                ..self.next(JobStatus::Running, now)
            }),
            from => Err(TransitionError {
                action: "cancel",
                from,
            }),
        }
    }

    /// A waiting job that never ran takes a later submit's payload and run time (debounce);
    /// it stays `queued` (its message comes early and is sent on) or `scheduled`.
    pub fn debounce(
        &self,
        payload: Value,
        run_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::Queued | JobStatus::Scheduled if self.runs == 0 => {
                let status = if run_at > after(now, MAX_QUEUE_DELAY) {
                    JobStatus::Scheduled
                } else {
                    JobStatus::Queued
                };
                Ok(Job {
                    payload,
                    run_at: run_at.max(self.run_at),
                    ..self.next(status, now)
                })
            }
            from => Err(TransitionError {
                action: "debounce",
                from,
            }),
        }
    }

    /// failed | dead | cancelled → queued, with a fresh set of attempts.
    pub fn retry(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        match self.status {
            JobStatus::Failed | JobStatus::Dead | JobStatus::Cancelled => Ok(Job {
                attempt: 0,
                progress: None,
                result: None,
                cancel_requested: false,
                queued_at: now,
                run_at: now,
                started_at: None,
                finished_at: None,
                heartbeat_at: None,
                expires_at: None,
                ..self.next(JobStatus::Queued, now)
            }),
            from => Err(TransitionError {
                action: "retry",
                from,
            }),
        }
    }

    /// scheduled → queued, when its run time comes within the queue's delay limit.
    pub fn release(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Scheduled {
            return Err(TransitionError {
                action: "release",
                from: self.status,
            });
        }
        Ok(Job {
            queued_at: now,
            ..self.next(JobStatus::Queued, now)
        })
    }

    /// queued → queued with a new message: the outbox rule for a job whose message was lost.
    pub fn redispatch(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Queued {
            return Err(TransitionError {
                action: "re-dispatch",
                from: self.status,
            });
        }
        Ok(Job {
            queued_at: now,
            ..self.next(JobStatus::Queued, now)
        })
    }

    /// running → queued: the run was stopped by a shutdown, not by anything about the job, so
    /// it does not use up an attempt. (A crash does: a job that kills its worker must end.)
    pub fn interrupt(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status != JobStatus::Running {
            return Err(TransitionError {
                action: "interrupt",
                from: self.status,
            });
        }
        if self.cancel_requested {
            return Ok(Job {
                error: Some(JobError::cancelled()),
                ..self.finished(JobStatus::Cancelled, now)
            });
        }
        Ok(Job {
            attempt: self.attempt.saturating_sub(1),
            error: Some(JobError::with_kind(
                "interrupted",
                format!(
                    "attempt {} was stopped by a shutdown; it does not count",
                    self.attempt
                ),
                true,
            )),
            run_at: now,
            queued_at: now,
            heartbeat_at: None,
            ..self.next(JobStatus::Queued, now)
        })
    }

    /// A running job whose worker stopped sending heartbeats: that attempt counts as failed.
    pub fn stalled(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        let since = self.due_at();
        self.finish(
            Outcome::Failed(JobError::with_kind(
                "stalled",
                format!("worker lost: no heartbeat since {}", since.to_rfc3339()),
                true,
            )),
            now,
            0.0,
        )
        .map(|job| Job {
            // A stalled attempt is re-dispatched at once: the silence already was its delay.
            run_at: if job.status == JobStatus::Queued {
                now
            } else {
                job.run_at
            },
            ..job
        })
    }

    /// Its queue message went to the dead-letter queue, every delivery having ended without an
    /// outcome (each run took its worker down, or the message could not be worked): the job
    /// ends `dead` at once, whatever attempts it had left, so a poison job stops.
    pub fn dead_lettered(&self, now: DateTime<Utc>) -> Result<Job, TransitionError> {
        if self.status.is_terminal() {
            return Err(TransitionError {
                action: "dead-letter",
                from: self.status,
            });
        }
        Ok(Job {
            error: Some(JobError::with_kind(
                "dead_letter",
                "its message went to the dead-letter queue: every delivery ended without an outcome (the run took its worker down, or timed out, each time)",
                false,
            )),
            heartbeat_at: None,
            ..self.finished(JobStatus::Dead, now)
        })
    }

    /// `dead_lettered`, for a job that never started: its message reached the dead-letter
    /// queue `times` times without one start (every receive throttled, or held).
    pub fn dead_lettered_unstarted(
        &self,
        now: DateTime<Utc>,
        times: u32,
    ) -> Result<Job, TransitionError> {
        let mut dead = self.dead_lettered(now)?;
        dead.error = Some(JobError::with_kind(
            "dead_letter",
            format!("its message went to the dead-letter queue {times} times without the job ever starting (its receives throttled, or held for a running slot or a rate, each time)"),
            false,
        ));
        Ok(dead)
    }

    /// The job-log line for the attempt that failed with `error` and led to this state.
    pub fn failure_log_line(&self, error: &JobError, now: DateTime<Utc>) -> String {
        let what = match self.status {
            JobStatus::Queued | JobStatus::Scheduled => format!(
                "; retrying in {} ms",
                (self.run_at - now).num_milliseconds().max(0)
            ),
            s => format!("; job {s}"),
        };
        format!(
            "attempt {} failed ({}): {}{what}",
            self.attempt, error.kind, error.message
        )
    }

    /// The lifecycle event a transition into this job's status announces, if any.
    pub fn lifecycle_event(&self) -> Option<LifecycleEvent> {
        let kind = match self.status {
            JobStatus::Succeeded => LifecycleKind::JobSucceeded,
            JobStatus::Failed => LifecycleKind::JobFailed,
            JobStatus::Dead => LifecycleKind::JobDead,
            JobStatus::Cancelled => LifecycleKind::JobCancelled,
            _ => return None,
        };
        Some(LifecycleEvent {
            kind,
            job_id: self.id,
            tenant: self.tenant.clone(),
            job_type: self.job_type.clone(),
            attempt: self.attempt,
            at: self.finished_at.unwrap_or(self.queued_at),
            error: self.error.clone(),
        })
    }
}
