//! The `BlobStore` port's contract, called directly on each adapter: the local
//! directory (`cargo run`) and S3 (moto). Every adapter must pass every case.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{fresh_bucket, Backend};
use lambda_batches::files::local::LocalBlobStore;
use lambda_batches::files::BlobStore;
use tokio::io::AsyncReadExt;

suite!(
    [embedded, moto],
    [
        given_chunks_written_when_finished_then_the_object_reads_back_whole_with_its_size,
        given_an_offset_when_opened_at_it_then_only_the_rest_is_read,
        given_a_writer_aborted_or_unfinished_then_nothing_is_at_its_key,
        given_an_object_when_created_again_then_the_new_content_replaces_it,
        given_objects_under_prefixes_then_list_and_delete_prefix_touch_only_their_folder,
        given_a_missing_object_then_open_is_none_and_delete_is_no_error,
        given_an_object_larger_than_one_s3_part_then_it_reads_back_whole,
        given_an_object_then_a_download_url_serves_it_where_the_store_makes_one,
    ]
);

/// The adapter of `backend`, and the directory that holds a local one.
async fn fresh_blobs(backend: Backend) -> (Arc<dyn BlobStore>, Option<tempfile::TempDir>) {
    match backend {
        Backend::Embedded => {
            let dir = tempfile::tempdir().expect("temp dir");
            let store = LocalBlobStore::open_dir(dir.path()).expect("blob dir");
            (Arc::new(store), Some(dir))
        }
        Backend::Moto => (Arc::new(fresh_bucket(backend).await), None),
        Backend::Dynalite => unreachable!("dynalite serves no S3"),
    }
}

async fn put(blobs: &dyn BlobStore, key: &str, chunks: &[&[u8]]) -> u64 {
    let mut writer = blobs.create(key).await.expect("create");
    for chunk in chunks {
        writer
            .write(Bytes::copy_from_slice(chunk))
            .await
            .expect("write");
    }
    writer.finish().await.expect("finish")
}

async fn read(blobs: &dyn BlobStore, key: &str, offset: u64) -> Option<Vec<u8>> {
    let mut reader = blobs.open_at(key, offset).await.expect("open_at")?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).await.expect("read");
    Some(bytes)
}

async fn given_chunks_written_when_finished_then_the_object_reads_back_whole_with_its_size(
    backend: Backend,
) {
    let (blobs, _dir) = fresh_blobs(backend).await;

    let size = put(
        &*blobs,
        "files/acme/file-1",
        &[b"{\"a\":1}\n", b"", b"{\"b\":2}\n"],
    )
    .await;

    assert_eq!(size, 16);
    let mut reader = blobs
        .open("files/acme/file-1")
        .await
        .expect("open")
        .expect("the object");
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).await.expect("read");
    assert_eq!(bytes, b"{\"a\":1}\n{\"b\":2}\n");
}

async fn given_an_offset_when_opened_at_it_then_only_the_rest_is_read(backend: Backend) {
    let (blobs, _dir) = fresh_blobs(backend).await;
    put(&*blobs, "files/acme/file-1", &[b"0123456789"]).await;

    assert_eq!(
        read(&*blobs, "files/acme/file-1", 0).await.as_deref(),
        Some(&b"0123456789"[..])
    );
    assert_eq!(
        read(&*blobs, "files/acme/file-1", 7).await.as_deref(),
        Some(&b"789"[..])
    );
    assert_eq!(
        read(&*blobs, "files/acme/file-1", 10).await.as_deref(),
        Some(&b""[..])
    );
    assert_eq!(
        read(&*blobs, "files/acme/file-1", 99).await.as_deref(),
        Some(&b""[..])
    );
}

async fn given_a_writer_aborted_or_unfinished_then_nothing_is_at_its_key(backend: Backend) {
    let (blobs, _dir) = fresh_blobs(backend).await;

    let mut aborted = blobs.create("files/acme/aborted").await.expect("create");
    aborted
        .write(Bytes::from_static(b"half"))
        .await
        .expect("write");
    aborted.abort().await;
    let mut dropped = blobs.create("files/acme/dropped").await.expect("create");
    dropped
        .write(Bytes::from_static(b"half"))
        .await
        .expect("write");
    drop(dropped);

    assert!(blobs
        .open("files/acme/aborted")
        .await
        .expect("open")
        .is_none());
    assert!(blobs
        .open("files/acme/dropped")
        .await
        .expect("open")
        .is_none());
    assert!(blobs.list("files/acme/").await.expect("list").is_empty());
}

async fn given_an_object_when_created_again_then_the_new_content_replaces_it(backend: Backend) {
    let (blobs, _dir) = fresh_blobs(backend).await;
    put(&*blobs, "files/acme/file-1", &[b"first, and longer"]).await;

    let size = put(&*blobs, "files/acme/file-1", &[b"second"]).await;

    assert_eq!(size, 6);
    assert_eq!(
        read(&*blobs, "files/acme/file-1", 0).await.as_deref(),
        Some(&b"second"[..])
    );
}

async fn given_objects_under_prefixes_then_list_and_delete_prefix_touch_only_their_folder(
    backend: Backend,
) {
    let (blobs, _dir) = fresh_blobs(backend).await;
    for key in [
        "uploads/acme/upload_1/part_b",
        "uploads/acme/upload_1/part_a",
        "uploads/acme/upload_10/part_a",
        "uploads/other/upload_1/part_a",
    ] {
        put(&*blobs, key, &[b"x"]).await;
    }

    assert_eq!(
        blobs.list("uploads/acme/upload_1/").await.expect("list"),
        [
            "uploads/acme/upload_1/part_a",
            "uploads/acme/upload_1/part_b"
        ],
        "sorted, and only the folder: not upload_10"
    );
    blobs
        .delete_prefix("uploads/acme/upload_1/")
        .await
        .expect("delete_prefix");
    assert!(blobs
        .list("uploads/acme/upload_1/")
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        blobs.list("uploads/").await.expect("list"),
        [
            "uploads/acme/upload_10/part_a",
            "uploads/other/upload_1/part_a"
        ]
    );
}

async fn given_a_missing_object_then_open_is_none_and_delete_is_no_error(backend: Backend) {
    let (blobs, _dir) = fresh_blobs(backend).await;

    assert!(blobs.open("files/acme/none").await.expect("open").is_none());
    assert!(blobs
        .open_at("files/acme/none", 5)
        .await
        .expect("open_at")
        .is_none());
    blobs.delete("files/acme/none").await.expect("delete");
    blobs
        .delete_prefix("uploads/acme/none/")
        .await
        .expect("delete_prefix");
}

async fn given_an_object_larger_than_one_s3_part_then_it_reads_back_whole(backend: Backend) {
    let (blobs, _dir) = fresh_blobs(backend).await;
    // 12 MiB in 1 MiB chunks: more than two of S3's 5 MiB minimum parts.
    let chunk: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<&[u8]> = (0..12).map(|_| chunk.as_slice()).collect();

    let size = put(&*blobs, "files/acme/large", &chunks).await;

    assert_eq!(size, 12 * 1_048_576);
    let bytes = read(&*blobs, "files/acme/large", 0)
        .await
        .expect("the object");
    assert_eq!(bytes.len(), 12 * 1_048_576);
    assert!(bytes.chunks(1_048_576).all(|c| c == chunk.as_slice()));
    let tail = read(&*blobs, "files/acme/large", 11 * 1_048_576 + 5)
        .await
        .expect("tail");
    assert_eq!(tail, &chunk[5..]);
}

async fn given_an_object_then_a_download_url_serves_it_where_the_store_makes_one(backend: Backend) {
    let (blobs, _dir) = fresh_blobs(backend).await;
    put(&*blobs, "files/acme/file-1", &[b"the content"]).await;

    let url = blobs
        .download_url("files/acme/file-1", Duration::from_secs(60))
        .await
        .expect("download_url");

    match (backend, url) {
        // The local directory streams its bytes through the API instead.
        (Backend::Embedded, None) => {}
        (Backend::Moto, Some(url)) => {
            let body = reqwest::get(&url).await.expect("GET the URL");
            assert!(body.status().is_success(), "{body:?}");
            assert_eq!(body.bytes().await.expect("body").as_ref(), b"the content");
        }
        (backend, url) => panic!("{backend:?} answered {url:?}"),
    }
}
