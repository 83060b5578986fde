//! The `BlobGateway` gRPC service: staged uploads, atomic commits that
//! replace the previous backup, streamed downloads, deletion.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use account_token::AccountId;
use e2eb_proto::storage::v1::blob_gateway_server::BlobGateway;
use e2eb_proto::storage::v1::{
    BlobInfo, CommitBackupRequest, CommitBackupResponse, DeleteBackupRequest, DeleteBackupResponse,
    DownloadBlobRequest, DownloadBlobResponse, GetBackupRequest, GetBackupResponse,
    UploadBlobRequest, UploadBlobResponse, upload_blob_request,
};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, instrument};

use crate::config::Limits;
use crate::download;
use crate::error::ServiceError;
use crate::layout::{self, BackupId, BlobName};
use crate::locks::CommitLocks;
use crate::store::{Store, StoreError};
use account_token::grpc::account;

/// The commit record: which backup is the account's committed one.
#[derive(Debug, Serialize, Deserialize)]
struct CommitRecord {
    backup_id: String,
    committed_at: i64,
}

pub struct Gateway {
    store: Store,
    limits: Limits,
    commit_locks: Arc<CommitLocks>,
}

impl Gateway {
    pub fn new(store: Store, limits: Limits, commit_locks: Arc<CommitLocks>) -> Self {
        Self {
            store,
            limits,
            commit_locks,
        }
    }

    async fn committed(&self, account: &AccountId) -> Result<Option<CommitRecord>, ServiceError> {
        let Some(bytes) = self
            .store
            .get_small(&layout::commit_record(account))
            .await?
        else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Other(format!("unreadable commit record: {e}")))?;
        Ok(Some(record))
    }

    async fn upload(
        &self,
        account: AccountId,
        mut messages: Streaming<UploadBlobRequest>,
    ) -> Result<u64, ServiceError> {
        let header = match messages.message().await {
            Ok(Some(UploadBlobRequest {
                part: Some(upload_blob_request::Part::Header(header)),
            })) => header,
            Ok(_) => {
                return Err(ServiceError::InvalidArgument(
                    "the first upload message must be the header".into(),
                ));
            }
            Err(status) => return Err(ServiceError::Stream(status)),
        };
        let backup_id = BackupId::parse(&header.backup_id)?;
        let name = BlobName::parse(&header.name)?;
        if header.size > self.limits.max_blob_bytes {
            return Err(ServiceError::BlobTooLarge {
                size: header.size,
                limit: self.limits.max_blob_bytes,
            });
        }
        if let Some(current) = self.committed(&account).await?
            && current.backup_id == backup_id.as_str()
        {
            return Err(ServiceError::CommittedIsReadOnly(current.backup_id));
        }

        let mut writer = self
            .store
            .writer(layout::blob_key(&account, &backup_id, &name));
        let mut received = 0u64;
        let outcome = loop {
            match messages.message().await {
                Ok(None) => break Ok(()),
                Ok(Some(UploadBlobRequest {
                    part: Some(upload_blob_request::Part::Data(data)),
                })) => {
                    received += data.len() as u64;
                    if received > header.size {
                        break Err(ServiceError::SizeMismatch {
                            declared: header.size,
                            received,
                        });
                    }
                    if let Err(error) = writer.write(&data).await {
                        break Err(error.into());
                    }
                }
                Ok(Some(_)) => {
                    break Err(ServiceError::InvalidArgument(
                        "only the first upload message may be a header".into(),
                    ));
                }
                Err(status) => break Err(ServiceError::Stream(status)),
            }
        };
        let outcome = outcome.and_then(|()| {
            if received == header.size {
                Ok(())
            } else {
                Err(ServiceError::SizeMismatch {
                    declared: header.size,
                    received,
                })
            }
        });
        match outcome {
            Ok(()) => writer.finish().await?,
            Err(error) => {
                writer.abort().await;
                return Err(error);
            }
        }
        Ok(received)
    }

    async fn commit(
        &self,
        account: &AccountId,
        request: CommitBackupRequest,
    ) -> Result<u64, ServiceError> {
        let backup_id = BackupId::parse(&request.backup_id)?;
        let _guard = self.commit_locks.lock(account).await;
        let current = self.committed(account).await?;
        let current_id = current.as_ref().map(|c| c.backup_id.as_str()).unwrap_or("");
        if current_id == backup_id.as_str() {
            // A retried commit whose answer was lost: already done.
            return Ok(0);
        }
        if current_id != request.replaces_backup_id {
            return Err(ServiceError::Conflict {
                expected: request.replaces_backup_id,
                actual: current_id.to_string(),
            });
        }
        let staged = self
            .store
            .list(&layout::backup_prefix(account, &backup_id))
            .await?;
        if staged.is_empty() {
            return Err(ServiceError::EmptyBackup(backup_id.as_str().into()));
        }
        let record = CommitRecord {
            backup_id: backup_id.as_str().to_string(),
            committed_at: unix_now(),
        };
        let record = serde_json::to_vec(&record).expect("a commit record serialises");
        self.store
            .put_small(&layout::commit_record(account), record)
            .await?;
        // Committed. Only now is everything else of this account garbage:
        // the replaced backup and any abandoned staging.
        let keep = layout::backup_prefix(account, &backup_id);
        let garbage = self
            .store
            .list(&layout::backups_prefix(account))
            .await?
            .into_iter()
            .filter(|object| !object.key.starts_with(&keep))
            .map(|object| object.key)
            .collect();
        Ok(self.store.delete_all(garbage).await?)
    }

    async fn describe(&self, account: &AccountId) -> Result<GetBackupResponse, ServiceError> {
        let current = self
            .committed(account)
            .await?
            .ok_or(ServiceError::NoBackup)?;
        let backup_id = BackupId::parse(&current.backup_id)?;
        let prefix = layout::backup_prefix(account, &backup_id);
        let blobs = self
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .map(|object| BlobInfo {
                name: object.key[prefix.len()..].to_string(),
                size: object.size,
            })
            .collect();
        Ok(GetBackupResponse {
            backup_id: current.backup_id,
            blobs,
            committed_at: current.committed_at,
        })
    }

    async fn delete(&self, account: &AccountId) -> Result<u64, ServiceError> {
        let _guard = self.commit_locks.lock(account).await;
        // The commit record goes first, so no half-deleted backup is ever
        // presented as committed.
        self.store.delete(&layout::commit_record(account)).await?;
        let keys: Vec<String> = self
            .store
            .list(&layout::account_prefix(account))
            .await?
            .into_iter()
            .map(|object| object.key)
            .collect();
        Ok(self.store.delete_all(keys).await?)
    }
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<DownloadBlobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl BlobGateway for Gateway {
    #[instrument(skip_all, fields(account))]
    async fn upload_blob(
        &self,
        request: Request<Streaming<UploadBlobRequest>>,
    ) -> Result<Response<UploadBlobResponse>, Status> {
        let account = account(&request)?;
        tracing::Span::current().record("account", account.as_str());
        let size = self.upload(account, request.into_inner()).await?;
        Ok(Response::new(UploadBlobResponse { size }))
    }

    type DownloadBlobStream = DownloadStream;

    #[instrument(skip_all, fields(account))]
    async fn download_blob(
        &self,
        request: Request<DownloadBlobRequest>,
    ) -> Result<Response<Self::DownloadBlobStream>, Status> {
        let account = account(&request)?;
        tracing::Span::current().record("account", account.as_str());
        let request = request.into_inner();
        let backup_id = BackupId::parse(&request.backup_id)?;
        let name = BlobName::parse(&request.name)?;
        let current = self
            .committed(&account)
            .await?
            .ok_or(ServiceError::NoBackup)?;
        if current.backup_id != backup_id.as_str() {
            return Err(ServiceError::NotCommitted(request.backup_id).into());
        }
        let body = match self
            .store
            .get(&layout::blob_key(&account, &backup_id, &name))
            .await
        {
            Ok(body) => body,
            Err(StoreError::NotFound) => {
                return Err(ServiceError::BlobNotFound(request.name).into());
            }
            Err(other) => return Err(ServiceError::from(other).into()),
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(download::pump(body, tx, |data| DownloadBlobResponse {
            data,
        }));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all, fields(account))]
    async fn commit_backup(
        &self,
        request: Request<CommitBackupRequest>,
    ) -> Result<Response<CommitBackupResponse>, Status> {
        let account = account(&request)?;
        tracing::Span::current().record("account", account.as_str());
        let request = request.into_inner();
        let backup_id = request.backup_id.clone();
        let deleted_blobs = self.commit(&account, request).await?;
        info!(backup_id, deleted_blobs, "backup committed");
        Ok(Response::new(CommitBackupResponse { deleted_blobs }))
    }

    async fn get_backup(
        &self,
        request: Request<GetBackupRequest>,
    ) -> Result<Response<GetBackupResponse>, Status> {
        let account = account(&request)?;
        Ok(Response::new(self.describe(&account).await?))
    }

    #[instrument(skip_all, fields(account))]
    async fn delete_backup(
        &self,
        request: Request<DeleteBackupRequest>,
    ) -> Result<Response<DeleteBackupResponse>, Status> {
        let account = account(&request)?;
        tracing::Span::current().record("account", account.as_str());
        let deleted_blobs = self.delete(&account).await?;
        info!(deleted_blobs, "backup deleted");
        Ok(Response::new(DeleteBackupResponse { deleted_blobs }))
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
