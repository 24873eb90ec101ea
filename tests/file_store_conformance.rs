//! The `FileStore` port's contract (file and upload records), called directly
//! on each adapter: the embedded store on disk, DynamoDB on moto and on
//! dynalite. Every adapter must pass every case.

mod common;

use std::sync::Arc;

use common::{fresh_stores, Backend};
use lambda_batches::domain::upload::{Upload, UploadId, UploadStatus, UploadTransition};
use lambda_batches::domain::{FileId, FileObject, FilePurpose, TenantId};
use lambda_batches::store::files::{
    FileListOutcome, FileQuery, FileRecord, FileStore, SortOrder, UploadOutcome, UploadRecord,
};

suite!(
    [embedded, moto, dynalite],
    [
        given_a_file_when_read_then_it_is_found_by_its_tenant_only_until_it_expires,
        given_files_when_listed_then_pages_follow_the_order_purpose_and_cursor,
        given_a_file_when_deleted_twice_then_the_first_delete_returns_it,
        given_expired_files_when_swept_then_each_is_returned_once,
        given_an_upload_when_completed_then_it_cannot_be_cancelled_and_vice_versa,
    ]
);

const NOW: i64 = 1_767_225_600;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant")
}

fn file(owner: &str, n: i64, purpose: FilePurpose, expires_at: Option<i64>) -> FileRecord {
    let id = format!("file-{n:032x}");
    FileRecord {
        tenant: tenant(owner),
        file: FileObject {
            id: FileId::parse(&id).expect("file id"),
            object: Default::default(),
            bytes: 10 + n as u64,
            created_at: NOW + n,
            expires_at,
            filename: format!("f{n}.jsonl"),
            purpose,
            status: Default::default(),
            status_details: None,
        },
        blob_key: format!("files/{owner}/{id}"),
        created_us: (NOW + n) * 1_000_000,
    }
}

fn file_id(n: i64) -> FileId {
    FileId::parse(&format!("file-{n:032x}")).expect("file id")
}

async fn store(backend: Backend) -> (Arc<dyn FileStore>, common::TestStores) {
    let stores = fresh_stores(backend).await;
    (Arc::clone(&stores.files), stores)
}

async fn page(files: &dyn FileStore, owner: &str, query: FileQuery) -> (Vec<String>, bool) {
    match files
        .list_files(&tenant(owner), &query, NOW)
        .await
        .expect("list")
    {
        FileListOutcome::Page { files, has_more } => (
            files.into_iter().map(|f| f.id.to_string()).collect(),
            has_more,
        ),
        FileListOutcome::UnknownCursor => panic!("unknown cursor in {query:?}"),
    }
}

fn ids(ns: &[i64]) -> Vec<String> {
    ns.iter().map(|n| format!("file-{n:032x}")).collect()
}

async fn given_a_file_when_read_then_it_is_found_by_its_tenant_only_until_it_expires(
    backend: Backend,
) {
    let (files, _stores) = store(backend).await;
    let record = file("acme", 1, FilePurpose::Batch, Some(NOW + 60));
    files.create_file(&record).await.expect("create");

    let found = files.get_file(&tenant("acme"), &file_id(1), NOW).await;
    let other = files.get_file(&tenant("other"), &file_id(1), NOW).await;
    let expired = files.get_file(&tenant("acme"), &file_id(1), NOW + 60).await;

    assert_eq!(found.expect("get"), Some(record));
    assert_eq!(other.expect("get"), None);
    assert_eq!(expired.expect("get"), None);
}

async fn given_files_when_listed_then_pages_follow_the_order_purpose_and_cursor(backend: Backend) {
    let (files, _stores) = store(backend).await;
    for n in 1..=5 {
        let purpose = if n % 2 == 0 {
            FilePurpose::BatchOutput
        } else {
            FilePurpose::Batch
        };
        files
            .create_file(&file("acme", n, purpose, None))
            .await
            .expect("create");
    }
    files
        .create_file(&file("other", 9, FilePurpose::Batch, None))
        .await
        .expect("create");
    let query = |limit, order, purpose, after: Option<i64>| FileQuery {
        purpose,
        after: after.map(file_id),
        limit,
        order,
    };

    assert_eq!(
        page(&*files, "acme", query(3, SortOrder::Desc, None, None)).await,
        (ids(&[5, 4, 3]), true)
    );
    assert_eq!(
        page(&*files, "acme", query(3, SortOrder::Desc, None, Some(3))).await,
        (ids(&[2, 1]), false)
    );
    assert_eq!(
        page(&*files, "acme", query(2, SortOrder::Asc, None, Some(1))).await,
        (ids(&[2, 3]), true)
    );
    assert_eq!(
        page(
            &*files,
            "acme",
            query(10, SortOrder::Asc, Some(FilePurpose::Batch), None)
        )
        .await,
        (ids(&[1, 3, 5]), false)
    );
    // The cursor need not be of the purpose listed.
    assert_eq!(
        page(
            &*files,
            "acme",
            query(10, SortOrder::Desc, Some(FilePurpose::Batch), Some(4))
        )
        .await,
        (ids(&[3, 1]), false)
    );
    assert_eq!(
        page(&*files, "acme", query(3, SortOrder::Desc, None, Some(2))).await,
        (ids(&[1]), false),
        "exactly the rest: has_more is false"
    );
    let unknown = files
        .list_files(
            &tenant("acme"),
            &query(3, SortOrder::Desc, None, Some(9)),
            NOW,
        )
        .await
        .expect("list");
    assert_eq!(
        unknown,
        FileListOutcome::UnknownCursor,
        "another tenant's file"
    );
}

async fn given_a_file_when_deleted_twice_then_the_first_delete_returns_it(backend: Backend) {
    let (files, _stores) = store(backend).await;
    let record = file("acme", 1, FilePurpose::Batch, None);
    files.create_file(&record).await.expect("create");

    let by_other = files.delete_file(&tenant("other"), &file_id(1), NOW).await;
    let first = files.delete_file(&tenant("acme"), &file_id(1), NOW).await;
    let second = files.delete_file(&tenant("acme"), &file_id(1), NOW).await;

    assert_eq!(by_other.expect("delete"), None);
    assert_eq!(first.expect("delete"), Some(record));
    assert_eq!(second.expect("delete"), None);
    assert_eq!(
        files
            .get_file(&tenant("acme"), &file_id(1), NOW)
            .await
            .expect("get"),
        None
    );
}

async fn given_expired_files_when_swept_then_each_is_returned_once(backend: Backend) {
    let (files, _stores) = store(backend).await;
    files
        .create_file(&file("acme", 1, FilePurpose::Batch, Some(NOW + 10)))
        .await
        .expect("create");
    files
        .create_file(&file("acme", 2, FilePurpose::Batch, Some(NOW + 1_000)))
        .await
        .expect("create");
    files
        .create_file(&file("acme", 3, FilePurpose::Batch, None))
        .await
        .expect("create");

    let swept = files
        .sweep_expired_files(NOW + 100, 10)
        .await
        .expect("sweep");
    let again = files
        .sweep_expired_files(NOW + 100, 10)
        .await
        .expect("sweep");

    // DynamoDB's TTL and the table stream delete expired files in AWS: there
    // the sweep has nothing to do, and only the embedded store returns any.
    match backend {
        Backend::Embedded => {
            let swept: Vec<String> = swept.into_iter().map(|r| r.file.id.to_string()).collect();
            assert_eq!(swept, ids(&[1]));
        }
        _ => assert!(swept.is_empty(), "{swept:?}"),
    }
    assert!(again.is_empty(), "{again:?}");
    assert!(files
        .get_file(&tenant("acme"), &file_id(2), NOW + 100)
        .await
        .expect("get")
        .is_some());
}

async fn given_an_upload_when_completed_then_it_cannot_be_cancelled_and_vice_versa(
    backend: Backend,
) {
    let (files, _stores) = store(backend).await;
    let upload = |n: u32| {
        let id = UploadId::parse(&format!("upload_{n:032x}")).expect("upload id");
        UploadRecord {
            tenant: tenant("acme"),
            upload: Upload {
                id,
                object: Default::default(),
                bytes: 100,
                created_at: NOW,
                expires_at: NOW + 3_600,
                filename: "input.jsonl".into(),
                purpose: FilePurpose::Batch,
                status: UploadStatus::Pending,
                file: None,
            },
            mime_type: "application/jsonl".into(),
            expires_after: None,
            purge_at: NOW + 86_400,
        }
    };
    let (completed, cancelled) = (upload(1), upload(2));
    files.create_upload(&completed).await.expect("create");
    files.create_upload(&cancelled).await.expect("create");
    let id = |r: &UploadRecord| r.upload.id.clone();
    let complete =
        UploadTransition::Complete(Box::new(file("acme", 1, FilePurpose::Batch, None).file));
    let acme = tenant("acme");

    let applied = files
        .transition_upload(&acme, &id(&completed), &complete, NOW)
        .await
        .expect("complete");
    let refused = files
        .transition_upload(&acme, &id(&completed), &UploadTransition::Cancel, NOW)
        .await
        .expect("cancel");
    let cancel = files
        .transition_upload(&acme, &id(&cancelled), &UploadTransition::Cancel, NOW)
        .await
        .expect("cancel");
    let late = files
        .transition_upload(&acme, &id(&cancelled), &complete, NOW)
        .await
        .expect("complete");
    let elsewhere = files
        .transition_upload(
            &tenant("other"),
            &id(&cancelled),
            &UploadTransition::Cancel,
            NOW,
        )
        .await
        .expect("cancel");

    let UploadOutcome::Applied(done) = applied else {
        panic!("{applied:?}")
    };
    assert_eq!(done.status, UploadStatus::Completed);
    assert_eq!(
        done.file.as_ref().map(|f| f.id.to_string()),
        Some(ids(&[1])[0].clone())
    );
    assert!(matches!(refused, UploadOutcome::Refused(u) if u.status == UploadStatus::Completed));
    assert!(matches!(cancel, UploadOutcome::Applied(u) if u.status == UploadStatus::Cancelled));
    assert!(matches!(late, UploadOutcome::Refused(u) if u.status == UploadStatus::Cancelled));
    assert_eq!(elsewhere, UploadOutcome::NotFound);
    let stored = files
        .get_upload(&acme, &id(&completed), NOW)
        .await
        .expect("get")
        .expect("the upload");
    assert_eq!(stored.upload.status, UploadStatus::Completed);
}
