//! [`ObjectStore`] over `aws-sdk-s3`: the gateway's [`Store`] (endpoint
//! override, path-style addressing, the configured timeouts).

use bytes::Bytes;
use futures::StreamExt;

use aws_sdk_s3::primitives::ByteStream;

use super::{Body, Condition, Object, ObjectInfo, ObjectStore, StoreError};
use crate::store::{Store, classify};

fn body_stream(body: ByteStream) -> Body {
    futures::stream::unfold(body, |mut body| async move {
        let next = body.next().await?;
        Some((
            next.map_err(|e| StoreError::Unavailable(format!("reading an object: {e}"))),
            body,
        ))
    })
    .boxed()
}

#[async_trait::async_trait]
impl ObjectStore for Store {
    async fn check(&self) -> Result<(), StoreError> {
        self.client()
            .head_bucket()
            .bucket(self.bucket())
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        condition: Condition,
    ) -> Result<String, StoreError> {
        let mut put = self
            .client()
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .body(ByteStream::from(bytes));
        put = match condition {
            Condition::None => put,
            Condition::IfNoneMatch => put.if_none_match("*"),
            Condition::IfMatch(etag) => put.if_match(etag),
        };
        let output = put.send().await.map_err(classify)?;
        Ok(output.e_tag().unwrap_or_default().to_string())
    }

    async fn put_stream(&self, key: &str, size: u64, mut body: Body) -> Result<(), StoreError> {
        let mut writer = self.writer(key.to_string());
        let mut received = 0u64;
        while let Some(next) = body.next().await {
            let result = match next {
                Ok(bytes) => {
                    received += bytes.len() as u64;
                    if received > size {
                        Err(StoreError::Aborted(format!(
                            "more than the declared {size} bytes"
                        )))
                    } else {
                        writer.write(&bytes).await
                    }
                }
                Err(error) => Err(error),
            };
            if let Err(error) = result {
                writer.abort().await;
                return Err(error);
            }
        }
        if received != size {
            writer.abort().await;
            return Err(StoreError::Aborted(format!(
                "{received} bytes of the declared {size}"
            )));
        }
        writer.finish().await
    }

    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        let output = match self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .map_err(classify)
        {
            Ok(output) => output,
            Err(StoreError::NotFound) => return Ok(None),
            Err(other) => return Err(other),
        };
        let etag = output.e_tag().unwrap_or_default().to_string();
        let last_modified = output
            .last_modified()
            .and_then(|t| std::time::SystemTime::try_from(*t).ok());
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("reading {key}: {e}")))?
            .into_bytes();
        Ok(Some(Object {
            bytes,
            etag,
            last_modified,
        }))
    }

    async fn get_range(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Body, StoreError> {
        let range = match len {
            Some(0) => return Ok(futures::stream::empty().boxed()),
            Some(len) => format!("bytes={offset}-{}", offset + len - 1),
            None => format!("bytes={offset}-"),
        };
        let output = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .range(range)
            .send()
            .await
            .map_err(classify)?;
        Ok(body_stream(output.body))
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Store::head(self, key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        Store::list(self, prefix).await
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Store::list_dirs(self, prefix).await
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<u64, StoreError> {
        self.delete_all(keys).await
    }
}
