use crate::helpers::{embedded, reopen, Under, DLQ, DLQ_RETENTION, MAX_RECEIVES, QUEUE};
use shared::ports::{QueueConsumer, QueueSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NO_WAIT: Duration = Duration::ZERO;
const VIS: Duration = Duration::from_secs(30);

pub async fn a_received_message_is_invisible_until_its_visibility_timeout(b: Under) {
    // GIVEN a message on a queue without a redrive policy
    let q = &b.queues;
    let plain = b.plain.as_str();
    q.send(plain, "m1", Duration::ZERO, 0).await.unwrap();

    // WHEN it is received with a short visibility timeout
    let got = q
        .receive(plain, 10, Duration::from_millis(200), NO_WAIT)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receive_count, 1);

    // THEN nobody else gets it meanwhile, and it comes back once the timeout passes
    assert!(q.receive(plain, 10, VIS, NO_WAIT).await.unwrap().is_empty());
    let again = q
        .receive(plain, 10, VIS, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    assert_ne!(again[0].receipt_handle, got[0].receipt_handle);

    // AND where the backend refuses stale receipts (embedded; SQS may take an older receipt,
    // which no caller relies on: job state decides, not the message) the old one cannot
    // delete it
    let mut latest = again[0].receipt_handle.clone();
    if b.refuses_stale_receipts {
        q.delete(plain, std::slice::from_ref(&got[0].receipt_handle))
            .await
            .unwrap();
        q.change_visibility(plain, &latest, Duration::ZERO)
            .await
            .unwrap();
        let third = q.receive(plain, 10, VIS, NO_WAIT).await.unwrap();
        assert_eq!(
            third.len(),
            1,
            "a stale receipt must not delete the message"
        );
        latest = third[0].receipt_handle.clone();
    }
    // AND the latest receipt deletes it for good
    q.delete(plain, &[latest]).await.unwrap();
    assert!(q
        .receive(plain, 10, Duration::ZERO, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
}

pub async fn a_delayed_message_is_delivered_only_after_its_delay(b: Under) {
    let q = &b.queues;
    // GIVEN a message sent with a delay
    let sent = Instant::now();
    q.send(&b.queue, "later", Duration::from_millis(300), 0)
        .await
        .unwrap();
    // WHEN receiving at once, then waiting
    assert!(q
        .receive(&b.queue, 1, VIS, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    let got = q
        .receive(&b.queue, 1, VIS, Duration::from_secs(5))
        .await
        .unwrap();
    // THEN it arrives, not before its delay
    assert_eq!(got[0].body, "later");
    assert!(sent.elapsed() >= Duration::from_millis(300));
}

pub async fn after_max_receives_a_message_moves_to_the_dead_letter_queue(b: Under) {
    let q = &b.queues;
    // GIVEN a message that is received and never deleted, MAX_RECEIVES times
    q.send(&b.queue, "poison", Duration::ZERO, 0).await.unwrap();
    for _ in 0..MAX_RECEIVES {
        let got = q
            .receive(&b.queue, 1, Duration::ZERO, NO_WAIT)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
    }
    // WHEN it becomes visible again
    let got = q.receive(&b.queue, 1, VIS, NO_WAIT).await.unwrap();
    // THEN it is not delivered from the queue but waits in the dead-letter queue
    assert!(got.is_empty());
    let dead = q.receive(&b.dlq, 1, VIS, NO_WAIT).await.unwrap();
    assert_eq!(dead[0].body, "poison");
}

pub async fn a_waiting_receiver_wakes_when_a_message_is_sent(b: Under) {
    let q = b.queues.clone();
    // GIVEN a receiver long-polling an empty queue
    let receiver = tokio::spawn({
        let (q, name) = (q.clone(), b.queue.clone());
        async move { q.receive(&name, 1, VIS, Duration::from_secs(20)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // WHEN a message is sent
    q.send(&b.queue, "wake", Duration::ZERO, 0).await.unwrap();
    // THEN the receiver returns with it, long before its 20 s wait is over
    let got = tokio::time::timeout(Duration::from_secs(5), receiver)
        .await
        .expect("woken, not timed out")
        .unwrap()
        .unwrap();
    assert_eq!(got[0].body, "wake");
}

#[tokio::test]
async fn higher_priority_messages_are_delivered_first() {
    let b = embedded();
    let q = &b.embedded.queue;
    for (body, priority) in [("low", -5), ("normal", 0), ("high", 10)] {
        q.send(QUEUE, body, Duration::ZERO, priority).await.unwrap();
    }
    let got = q.receive(QUEUE, 3, VIS, NO_WAIT).await.unwrap();
    let bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["high", "normal", "low"]);
}

#[tokio::test]
async fn messages_survive_a_restart_and_in_flight_ones_come_back_at_once() {
    // GIVEN one message in flight (received, not deleted) and one waiting
    let b = embedded();
    b.ports
        .queue
        .send(QUEUE, "in-flight", Duration::ZERO, 0)
        .await
        .unwrap();
    let got = b
        .embedded
        .queue
        .receive(QUEUE, 1, VIS, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    b.ports
        .queue
        .send(QUEUE, "waiting", Duration::ZERO, 0)
        .await
        .unwrap();

    // WHEN the process stops and the backend is opened again
    let b = reopen(b);

    // THEN both are delivered, without waiting out the old visibility timeout
    let mut bodies: Vec<_> = b
        .embedded
        .queue
        .receive(QUEUE, 10, VIS, NO_WAIT)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    bodies.sort();
    assert_eq!(bodies, vec!["in-flight", "waiting"]);
}

#[tokio::test]
async fn dead_letters_are_kept_for_their_retention_then_deleted() {
    // GIVEN a message that moved to the dead-letter queue after too many receives
    let b = embedded();
    let q = &b.embedded.queue;
    q.send(QUEUE, "poison", Duration::ZERO, 0).await.unwrap();
    for _ in 0..MAX_RECEIVES {
        let got = q.receive(QUEUE, 1, VIS, NO_WAIT).await.unwrap();
        q.change_visibility(QUEUE, &got[0].receipt_handle, Duration::ZERO)
            .await
            .unwrap();
    }
    assert!(q.receive(QUEUE, 1, VIS, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(b.embedded.queue.depth(DLQ), 1);
    let moved_at = chrono::Utc::now();

    // WHEN expiry runs before the retention has passed
    let early = moved_at + chrono::Duration::from_std(DLQ_RETENTION).unwrap()
        - chrono::Duration::seconds(60);
    let deleted = b
        .embedded
        .queue
        .delete_expired_dead_letters(early, 100)
        .await
        .unwrap();
    // THEN the dead letter is still there
    assert_eq!(deleted, 0);
    assert_eq!(b.embedded.queue.depth(DLQ), 1);

    // WHEN it runs after the retention
    let late = moved_at
        + chrono::Duration::from_std(DLQ_RETENTION).unwrap()
        + chrono::Duration::seconds(60);
    let deleted = b
        .embedded
        .queue
        .delete_expired_dead_letters(late, 100)
        .await
        .unwrap();
    // THEN it is gone, from the index and from disk (a restart does not bring it back)
    assert_eq!(deleted, 1);
    assert_eq!(b.embedded.queue.depth(DLQ), 0);
    let b = reopen(b);
    assert_eq!(b.embedded.queue.depth(DLQ), 0);
    assert!(b
        .embedded
        .queue
        .receive(DLQ, 10, VIS, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_index_keeps_no_bodies_so_memory_per_message_does_not_grow_with_them() {
    // GIVEN 1,000 messages of 10 KiB each, waiting (delayed) and ready
    let b = embedded();
    let q = &b.embedded.queue;
    let body = "x".repeat(10 * 1024);
    for i in 0..1000 {
        let delay = if i % 2 == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(600)
        };
        q.send(QUEUE, &body, delay, 0).await.unwrap();
    }

    // WHEN the index's memory is measured
    let per_message = b.embedded.queue.index_bytes() / 1000;

    // THEN it is a small constant per message (ids and ordering keys), nowhere near a body
    assert!(per_message < 128, "{per_message} bytes per message");
    // AND a received message still carries its body, read from disk
    let got = q.receive(QUEUE, 1, VIS, NO_WAIT).await.unwrap();
    assert_eq!(got[0].body, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_receivers_are_busy_are_all_delivered() {
    // GIVEN receivers polling a queue without pause
    let b = embedded();
    const N: usize = 20_000;
    let received = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let receivers: Vec<_> = (0..2)
        .map(|_| {
            let (q, received) = (b.embedded.queue.clone(), received.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                while received.lock().unwrap().len() < N && Instant::now() < deadline {
                    let got = q
                        .receive(QUEUE, 10, VIS, Duration::from_millis(100))
                        .await
                        .unwrap();
                    let handles: Vec<String> =
                        got.iter().map(|m| m.receipt_handle.clone()).collect();
                    received
                        .lock()
                        .unwrap()
                        .extend(got.into_iter().map(|m| m.body));
                    q.delete(QUEUE, &handles).await.unwrap();
                }
            })
        })
        .collect();

    // WHEN 4 senders send 20,000 messages meanwhile
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let q = b.embedded.queue.clone();
            tokio::spawn(async move {
                for i in 0..N / 4 {
                    q.send(QUEUE, &format!("{s}-{i}"), Duration::ZERO, 0)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    for r in receivers {
        r.await.unwrap();
    }

    // THEN every one was delivered, and none is left behind
    assert_eq!(received.lock().unwrap().len(), N);
    assert_eq!(b.embedded.queue.depth(QUEUE), 0);
}
