//! The `WorkQueue` port's contract, called directly on each adapter: the
//! in-process channel (`cargo run`) and SQS (moto). What is enqueued is what the
//! worker receives, every kind of item, intact.

mod common;

use aws_sdk_sqs::Client;
use common::{sdk_config, Backend};
use lambda_batches::domain::TenantId;
use lambda_batches::queue::in_process::InProcessQueue;
use lambda_batches::queue::sqs::SqsQueue;
use lambda_batches::queue::{WorkItem, WorkQueue};

suite!(
    [embedded, moto],
    [
        given_every_kind_of_item_when_enqueued_then_each_is_received_intact,
        given_an_item_enqueued_after_a_delay_then_it_arrives_after_it_or_never_in_process,
    ]
);

fn every_kind() -> Vec<WorkItem> {
    let tenant = TenantId::parse("acme").expect("tenant");
    let batch_id = lambda_batches::domain::BatchId::parse("batch_0123456789abcdef0123456789abcdef")
        .expect("batch id");
    vec![
        WorkItem::ValidateBatch {
            tenant: tenant.clone(),
            batch_id: batch_id.clone(),
        },
        WorkItem::RunShard {
            tenant: tenant.clone(),
            batch_id: batch_id.clone(),
            start: 4_194_304,
            end: u64::MAX,
        },
        WorkItem::Finalize {
            tenant: tenant.clone(),
            batch_id: batch_id.clone(),
        },
        WorkItem::WatchShard {
            tenant: tenant.clone(),
            batch_id: batch_id.clone(),
            start: 0,
            end: 4_194_304,
            owner: "3b0c9a4e-2f9e-4a63-9d2e-7f1c2b5a8e10".into(),
        },
        WorkItem::FinishCancel { tenant, batch_id },
    ]
}

async fn given_every_kind_of_item_when_enqueued_then_each_is_received_intact(backend: Backend) {
    let items = every_kind();
    let received = match backend {
        Backend::Embedded => {
            let (queue, mut receiver) = InProcessQueue::new();
            for item in &items {
                queue.enqueue(item).await.expect("enqueue");
            }
            let mut received = Vec::new();
            while let Ok(item) = receiver.try_recv() {
                received.push(item);
            }
            received
        }
        Backend::Moto => {
            let config = sdk_config(backend).await;
            let client = Client::new(&config);
            let name = format!("work-{}", uuid::Uuid::new_v4().simple());
            let url = client
                .create_queue()
                .queue_name(&name)
                .send()
                .await
                .expect("CreateQueue")
                .queue_url
                .expect("a queue url");
            let queue = SqsQueue::new(&config, &url);
            for item in &items {
                queue.enqueue(item).await.expect("enqueue");
            }
            let mut received = Vec::new();
            // Bounded: an item that never arrives fails the comparison below.
            for _ in 0..20 {
                if received.len() == items.len() {
                    break;
                }
                let answer = client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .expect("ReceiveMessage");
                for message in answer.messages.unwrap_or_default() {
                    let body = message.body.expect("a body");
                    received.push(serde_json::from_str::<WorkItem>(&body).expect("a work item"));
                }
            }
            received
        }
        Backend::Dynalite => unreachable!("dynalite serves no SQS"),
    };

    let mut received = received;
    let order = |i: &WorkItem| serde_json::to_string(i).expect("json");
    received.sort_by_key(order);
    let mut expected = items;
    expected.sort_by_key(order);
    assert_eq!(received, expected);
}

/// A delayed item (a shard's watch) is for whichever process takes it later:
/// SQS holds it back for the delay, the in-process queue holds none (it would
/// die with the process it is for).
async fn given_an_item_enqueued_after_a_delay_then_it_arrives_after_it_or_never_in_process(
    backend: Backend,
) {
    let item = every_kind().remove(0);
    let delay = std::time::Duration::from_secs(2);
    match backend {
        Backend::Embedded => {
            let (queue, mut receiver) = InProcessQueue::new();
            queue.enqueue_after(&item, delay).await.expect("enqueue");
            queue.enqueue(&item).await.expect("enqueue");
            assert_eq!(receiver.recv().await, Some(item));
            assert!(receiver.try_recv().is_err(), "the delayed item is dropped");
        }
        Backend::Moto => {
            let (client, url) = fresh_queue(backend).await;
            let queue = SqsQueue::new(&sdk_config(backend).await, &url);
            let sent = std::time::Instant::now();
            queue.enqueue_after(&item, delay).await.expect("enqueue");
            let mut received = None;
            // Bounded: an item that never arrives fails below.
            for _ in 0..20 {
                let answer = client
                    .receive_message()
                    .queue_url(&url)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .expect("ReceiveMessage");
                if let Some(message) = answer.messages.unwrap_or_default().pop() {
                    received = Some((sent.elapsed(), message.body.expect("a body")));
                    break;
                }
            }
            let (after, body) = received.expect("the delayed item arrives");
            assert!(
                after >= delay,
                "held back for the delay: arrived after {after:?}"
            );
            assert_eq!(
                serde_json::from_str::<WorkItem>(&body).expect("a work item"),
                item
            );
        }
        Backend::Dynalite => unreachable!("dynalite serves no SQS"),
    }
}

async fn fresh_queue(backend: Backend) -> (Client, String) {
    let client = Client::new(&sdk_config(backend).await);
    let name = format!("work-{}", uuid::Uuid::new_v4().simple());
    let url = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a queue url");
    (client, url)
}

#[tokio::test]
async fn given_the_worker_gone_when_an_item_is_enqueued_in_process_then_it_is_an_error() {
    let (queue, receiver) = InProcessQueue::new();
    drop(receiver);
    let item = every_kind().remove(0);
    assert!(queue.enqueue(&item).await.is_err());
}
