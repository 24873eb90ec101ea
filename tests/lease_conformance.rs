//! One conformance suite for every `ShardLeases` adapter, called directly:
//! the embedded store on disk (as `cargo run` opens it), moto and dynalite.

mod common;

use std::sync::Arc;

use common::{create_body, fresh_dynamo_store, Backend, TestApp, TestStores};
use futures::future::join_all;
use lambda_batches::domain::execution::ByteRange;
use lambda_batches::domain::{BatchId, TenantId};
use lambda_batches::files::local::LocalBlobStore;
use lambda_batches::store::embedded::EmbeddedStore;
use lambda_batches::store::leases::{Acquired, Holder, ShardKey, ShardLeases, QUEUED};

suite!(
    [embedded, moto, dynalite],
    [
        given_a_free_shard_when_acquired_then_another_owner_is_refused_until_the_lease_runs_out,
        given_a_held_lease_when_its_owner_renews_then_it_lasts_from_the_renewal,
        given_a_lease_when_another_owner_releases_then_nothing_changes_and_its_owner_frees_it,
        given_leases_when_listing_expired_then_only_those_run_out_are_listed_first_out_first,
        given_a_lease_run_out_when_two_reconcilers_take_it_over_then_one_wins_and_a_worker_may_take_it,
        given_a_renewed_lease_when_taken_over_with_a_stale_view_then_it_stays_with_its_owner,
        given_a_handed_back_lease_then_the_next_worker_takes_it_at_once,
        given_16_concurrent_acquires_then_exactly_one_owner_holds_the_lease,
        given_leases_then_no_listing_shows_them,
        given_a_lease_then_its_holder_is_read_as_it_stands_until_it_is_released,
    ]
);

const T0: i64 = 1_800_000_000;
const LEASE: i64 = 30;

struct Leases {
    leases: Arc<dyn ShardLeases>,
    stores: TestStores,
    _dir: tempfile::TempDir,
}

async fn leases(backend: Backend) -> Leases {
    let dir = tempfile::tempdir().expect("temp dir");
    let (leases, batches, files): (Arc<dyn ShardLeases>, Arc<_>, Arc<_>) = match backend {
        Backend::Embedded => {
            let store = Arc::new(EmbeddedStore::open(&dir.path().join("data")).expect("store"));
            (store.clone(), store.clone() as _, store as _)
        }
        Backend::Moto | Backend::Dynalite => {
            let store = Arc::new(fresh_dynamo_store(backend).await);
            (store.clone(), store.clone() as _, store as _)
        }
    };
    let blobs = Arc::new(LocalBlobStore::open_dir(&dir.path().join("blobs")).expect("blobs"));
    Leases {
        leases,
        stores: TestStores {
            batches,
            files,
            blobs,
            dynamodb_requests: None,
            _blob_dir: None,
            _store_dir: None,
        },
        _dir: dir,
    }
}

fn shard(tenant: &str, n: u64) -> ShardKey {
    ShardKey {
        tenant: TenantId::parse(tenant).expect("tenant"),
        batch: BatchId::parse(&format!("batch_{:032x}", 0xabc + n % 2)).expect("batch id"),
        shard: ByteRange {
            start: n * 4096,
            end: (n + 1) * 4096,
        },
    }
}

async fn given_a_free_shard_when_acquired_then_another_owner_is_refused_until_the_lease_runs_out(
    backend: Backend,
) {
    let held = leases(backend).await;
    let l = &held.leases;
    let key = shard("default", 0);

    assert_eq!(
        l.acquire(&key, "a", T0, LEASE).await.unwrap(),
        Acquired::Acquired
    );
    for at in [T0, T0 + 10, T0 + LEASE - 1] {
        assert_eq!(
            l.acquire(&key, "b", at, LEASE).await.unwrap(),
            Acquired::HeldByOther { until: T0 + LEASE },
            "at {at}"
        );
    }
    // Its owner acquiring again (a duplicate delivery in one run) keeps it.
    assert_eq!(
        l.acquire(&key, "a", T0 + 1, LEASE).await.unwrap(),
        Acquired::Acquired
    );
    assert_eq!(
        l.acquire(&key, "b", T0 + 1 + LEASE, LEASE).await.unwrap(),
        Acquired::Acquired
    );
    assert!(!l.renew(&key, "a", T0 + 1 + LEASE, LEASE).await.unwrap());
    // Another shard of the same batch is a lease of its own.
    assert_eq!(
        l.acquire(&shard("default", 2), "a", T0 + 2, LEASE)
            .await
            .unwrap(),
        Acquired::Acquired
    );
}

async fn given_a_lease_then_its_holder_is_read_as_it_stands_until_it_is_released(backend: Backend) {
    let held = leases(backend).await;
    let l = &held.leases;
    let key = shard("default", 0);
    assert_eq!(l.holder(&key).await.unwrap(), None, "no lease yet");

    l.acquire(&key, "a", T0, LEASE).await.unwrap();
    let holder = |owner: &str, until: i64| {
        Some(Holder {
            owner: owner.into(),
            until,
        })
    };

    assert_eq!(l.holder(&key).await.unwrap(), holder("a", T0 + LEASE));
    l.renew(&key, "a", T0 + 5, LEASE).await.unwrap();
    assert_eq!(l.holder(&key).await.unwrap(), holder("a", T0 + 5 + LEASE));
    assert_eq!(l.holder(&shard("default", 1)).await.unwrap(), None);
    assert!(l
        .take_over(&key, T0 + 5 + LEASE, T0 + 40, LEASE)
        .await
        .unwrap());
    assert_eq!(
        l.holder(&key).await.unwrap(),
        holder(QUEUED, T0 + 40 + LEASE),
        "run out, then taken over for the queue"
    );
    l.acquire(&key, "b", T0 + 41, LEASE).await.unwrap();
    l.release(&key, "b").await.unwrap();
    assert_eq!(l.holder(&key).await.unwrap(), None, "released");
}

async fn given_a_held_lease_when_its_owner_renews_then_it_lasts_from_the_renewal(backend: Backend) {
    let held = leases(backend).await;
    let l = &held.leases;
    let key = shard("default", 0);
    l.acquire(&key, "a", T0, LEASE).await.unwrap();

    assert!(l.renew(&key, "a", T0 + 20, LEASE).await.unwrap());

    assert_eq!(
        l.acquire(&key, "b", T0 + LEASE + 5, LEASE).await.unwrap(),
        Acquired::HeldByOther {
            until: T0 + 20 + LEASE
        }
    );
    assert!(!l.renew(&key, "b", T0 + 21, LEASE).await.unwrap());
    assert!(
        !l.renew(&shard("default", 1), "a", T0 + 21, LEASE)
            .await
            .unwrap(),
        "no lease to renew"
    );
    assert!(l.expired(T0 + LEASE + 19, 10).await.unwrap().is_empty());
    assert_eq!(l.expired(T0 + LEASE + 20, 10).await.unwrap(), vec![key]);
}

async fn given_a_lease_when_another_owner_releases_then_nothing_changes_and_its_owner_frees_it(
    backend: Backend,
) {
    let held = leases(backend).await;
    let l = &held.leases;
    let key = shard("default", 0);
    l.acquire(&key, "a", T0, LEASE).await.unwrap();

    l.release(&key, "b").await.unwrap();
    assert_eq!(
        l.acquire(&key, "c", T0 + 1, LEASE).await.unwrap(),
        Acquired::HeldByOther { until: T0 + LEASE }
    );

    l.release(&key, "a").await.unwrap();
    assert!(l.expired(i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(
        l.acquire(&key, "c", T0 + 1, LEASE).await.unwrap(),
        Acquired::Acquired
    );
    // Releasing what is not there is a no-op.
    l.release(&shard("default", 5), "c").await.unwrap();
}

async fn given_leases_when_listing_expired_then_only_those_run_out_are_listed_first_out_first(
    backend: Backend,
) {
    let held = leases(backend).await;
    let l = &held.leases;
    let (first, second, later) = (shard("a", 0), shard("b", 1), shard("a", 2));
    l.acquire(&second, "w2", T0, LEASE).await.unwrap();
    l.acquire(&first, "w1", T0 - 10, LEASE).await.unwrap();
    l.acquire(&later, "w3", T0 + 60, LEASE).await.unwrap();

    assert!(l.expired(T0 + LEASE - 11, 10).await.unwrap().is_empty());
    assert_eq!(
        l.expired(T0 + LEASE - 10, 10).await.unwrap(),
        vec![first.clone()]
    );
    assert_eq!(
        l.expired(T0 + LEASE, 10).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        l.expired(i64::MAX, 10).await.unwrap(),
        vec![first.clone(), second.clone(), later.clone()]
    );
    assert_eq!(l.expired(i64::MAX, 2).await.unwrap(), vec![first, second]);
}

async fn given_a_lease_run_out_when_two_reconcilers_take_it_over_then_one_wins_and_a_worker_may_take_it(
    backend: Backend,
) {
    let held = leases(backend).await;
    let l = &held.leases;
    let key = shard("default", 0);
    l.acquire(&key, "dead", T0, LEASE).await.unwrap();
    let now = T0 + LEASE - 1;
    assert!(
        !l.take_over(&key, now, now, LEASE).await.unwrap(),
        "still live"
    );

    let now = T0 + LEASE;
    let won = join_all((0..2).map(|_| l.take_over(&key, now, now, LEASE))).await;

    let won: Vec<bool> = won.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    assert!(
        l.expired(now, 10).await.unwrap().is_empty(),
        "the queue holds it"
    );
    assert!(!l.renew(&key, "dead", now, LEASE).await.unwrap());
    assert_eq!(
        l.acquire(&key, "next", now + 1, LEASE).await.unwrap(),
        Acquired::Acquired
    );
    assert_eq!(
        l.acquire(&key, "duplicate", now + 1, LEASE).await.unwrap(),
        Acquired::HeldByOther {
            until: now + 1 + LEASE
        }
    );
    // The queue's hold runs out too, if its work item was lost.
    let key2 = shard("default", 1);
    l.acquire(&key2, "dead", T0, LEASE).await.unwrap();
    assert!(l.take_over(&key2, now, now, LEASE).await.unwrap());
    assert_eq!(
        l.expired(now + LEASE, 10).await.unwrap(),
        vec![key2.clone()]
    );
}

async fn given_a_renewed_lease_when_taken_over_with_a_stale_view_then_it_stays_with_its_owner(
    backend: Backend,
) {
    let held = leases(backend).await;
    let l = &held.leases;
    let key = shard("default", 0);
    l.acquire(&key, "a", T0, LEASE).await.unwrap();
    let stale = l.expired(T0 + LEASE, 10).await.unwrap();
    assert_eq!(stale, vec![key.clone()]);

    // A late heartbeat lands between the reconciler's Query and its claim.
    assert!(l.renew(&key, "a", T0 + LEASE, LEASE).await.unwrap());

    assert!(!l
        .take_over(&key, T0 + LEASE, T0 + LEASE, LEASE)
        .await
        .unwrap());
    assert!(l.renew(&key, "a", T0 + LEASE + 1, LEASE).await.unwrap());
}

async fn given_a_handed_back_lease_then_the_next_worker_takes_it_at_once(backend: Backend) {
    let held = leases(backend).await;
    let l = &held.leases;
    let key = shard("default", 0);
    l.acquire(&key, "a", T0, LEASE).await.unwrap();

    assert!(!l.hand_back(&key, "b", T0 + 5, LEASE).await.unwrap());
    assert!(l.hand_back(&key, "a", T0 + 5, LEASE).await.unwrap());
    // The run that handed it back releases after; that must not free it.
    l.release(&key, "a").await.unwrap();

    assert!(l.expired(T0 + 5 + LEASE - 1, 10).await.unwrap().is_empty());
    assert_eq!(
        l.acquire(&key, "b", T0 + 6, LEASE).await.unwrap(),
        Acquired::Acquired
    );
    assert!(!l.renew(&key, "a", T0 + 7, LEASE).await.unwrap());
}

async fn given_16_concurrent_acquires_then_exactly_one_owner_holds_the_lease(backend: Backend) {
    let held = leases(backend).await;
    let l = &held.leases;
    let key = shard("default", 0);
    let owners: Vec<String> = (0..16).map(|i| format!("owner-{i}")).collect();

    let results = join_all(owners.iter().map(|o| l.acquire(&key, o, T0, LEASE))).await;

    let winners: Vec<&String> = owners
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r.as_ref().unwrap(), Acquired::Acquired))
        .map(|(o, _)| o)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (owner, result) in owners.iter().zip(&results) {
        if owner != winners[0] {
            assert_eq!(
                result.as_ref().unwrap(),
                &Acquired::HeldByOther { until: T0 + LEASE }
            );
        }
    }
    assert!(l.renew(&key, winners[0], T0 + 1, LEASE).await.unwrap());
}

async fn given_leases_then_no_listing_shows_them(backend: Backend) {
    let Leases {
        leases: l,
        stores,
        _dir,
    } = leases(backend).await;
    let app = TestApp::with_stores(stores, lambda_batches::config::AuthConfig::Open, None);
    let created = app.create(&create_body("file-abc")).await.id();
    let batch = BatchId::parse(&created).expect("batch id");
    for n in 0..3 {
        let key = ShardKey {
            batch: batch.clone(),
            ..shard("default", n)
        };
        l.acquire(&key, "a", T0, LEASE).await.unwrap();
    }

    let batches = app.get("/v1/batches?limit=100").await;
    let ids: Vec<&str> = batches.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|b| b["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, vec![created.as_str()], "{}", batches.body);
    let files = app.get("/v1/files?limit=100").await;
    assert_eq!(files.body["data"], serde_json::json!([]), "{}", files.body);
    let retrieved = app.retrieve(&created).await;
    assert_eq!(retrieved.body["id"], created.as_str());
}
