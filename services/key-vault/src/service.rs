//! The gRPC face of the vault: takes the account from the verified token,
//! converts messages, and maps errors through `error.rs`. No decisions here.

use account_token::grpc::account;
use e2eb_proto::vault::v2 as pb;
use e2eb_proto::vault::v2::key_vault_server::KeyVault;
use tonic::{Request, Response, Status};

use crate::error::VaultError;
use crate::vault::login::LoginOutcome;
use crate::vault::register::RegisterFinish;
use crate::vault::row::{BackupRef, PendingBackup};
use crate::vault::{Proof, Vault};

pub struct KeyVaultService {
    vault: Vault,
}

impl KeyVaultService {
    pub fn new(vault: Vault) -> Self {
        Self { vault }
    }
}

fn proof(authorization: Option<pb::Authorization>) -> Option<Proof> {
    match authorization?.proof? {
        pb::authorization::Proof::LoginTicket(ticket) => Some(Proof::LoginTicket(ticket)),
        pb::authorization::Proof::KeySignature(signature) => Some(signature_proof(signature)),
    }
}

fn signature_proof(signature: pb::KeySignature) -> Proof {
    Proof::KeySignature {
        challenge: signature.challenge,
        signature: signature.signature,
    }
}

fn required_signature(signature: Option<pb::KeySignature>) -> Result<Proof, Status> {
    signature
        .map(signature_proof)
        .ok_or_else(|| VaultError::ProofRequired.into())
}

fn backup_ref(backup: BackupRef) -> pb::BackupRef {
    pb::BackupRef {
        generation: backup.generation,
        manifest_digest: backup.manifest_digest.to_vec(),
    }
}

fn pending_backup(pending: PendingBackup) -> pb::PendingBackup {
    pb::PendingBackup {
        generation: pending.generation,
        manifest_digest: pending.manifest_digest.to_vec(),
        auth_public_key: pending.auth_public_key.to_vec(),
    }
}

fn missing(field: &str) -> Status {
    VaultError::InvalidArgument(format!("{field} is missing")).into()
}

#[tonic::async_trait]
impl KeyVault for KeyVaultService {
    async fn get_vault_info(
        &self,
        request: Request<pb::GetVaultInfoRequest>,
    ) -> Result<Response<pb::GetVaultInfoResponse>, Status> {
        account(&request)?;
        let info = self.vault.info();
        Ok(Response::new(pb::GetVaultInfoResponse {
            server_public_key: info.public_key.to_vec(),
            fingerprint: info.fingerprint,
            max_guesses: info.max_guesses,
        }))
    }

    async fn get_challenge(
        &self,
        request: Request<pb::GetChallengeRequest>,
    ) -> Result<Response<pb::GetChallengeResponse>, Status> {
        let account = account(&request)?;
        let challenge = self.vault.challenge(&account).await?;
        Ok(Response::new(pb::GetChallengeResponse {
            challenge: challenge.to_vec(),
        }))
    }

    async fn enable_key_backup(
        &self,
        request: Request<pb::EnableKeyBackupRequest>,
    ) -> Result<Response<pb::EnableKeyBackupResponse>, Status> {
        let account = account(&request)?;
        let request = request.into_inner();
        self.vault
            .enable_key_backup(
                &account,
                &request.auth_public_key,
                proof(request.authorization),
            )
            .await?;
        Ok(Response::new(pb::EnableKeyBackupResponse {}))
    }

    async fn register_start(
        &self,
        request: Request<pb::RegisterStartRequest>,
    ) -> Result<Response<pb::RegisterStartResponse>, Status> {
        let account = account(&request)?;
        let request = request.into_inner();
        let started = self
            .vault
            .register_start(&account, &request.registration_request)
            .await?;
        Ok(Response::new(pb::RegisterStartResponse {
            registration_response: started.registration_response,
            registration_id: started.registration_id.to_vec(),
        }))
    }

    async fn register_finish(
        &self,
        request: Request<pb::RegisterFinishRequest>,
    ) -> Result<Response<pb::RegisterFinishResponse>, Status> {
        let account = account(&request)?;
        let request = request.into_inner();
        let finish = RegisterFinish {
            registration_upload: request.registration_upload,
            sealed_key: request.sealed_key,
            auth_public_key: request.auth_public_key,
            registration_id: request.registration_id,
            authorization: proof(request.authorization),
        };
        self.vault.register_finish(&account, finish).await?;
        Ok(Response::new(pb::RegisterFinishResponse {}))
    }

    async fn login_start(
        &self,
        request: Request<pb::LoginStartRequest>,
    ) -> Result<Response<pb::LoginStartResponse>, Status> {
        let account = account(&request)?;
        let request = request.into_inner();
        let started = self
            .vault
            .login_start(&account, &request.credential_request)
            .await?;
        Ok(Response::new(pb::LoginStartResponse {
            credential_response: started.credential_response,
            session_id: started.session_id.to_vec(),
            guesses_remaining: started.guesses_remaining,
        }))
    }

    async fn login_finish(
        &self,
        request: Request<pb::LoginFinishRequest>,
    ) -> Result<Response<pb::LoginFinishResponse>, Status> {
        let account = account(&request)?;
        let request = request.into_inner();
        let outcome = self
            .vault
            .login_finish(
                &account,
                &request.session_id,
                &request.credential_finalization,
            )
            .await?;
        let outcome = match outcome {
            LoginOutcome::Success {
                encrypted_sealed_key,
                login_ticket,
            } => pb::login_finish_response::Outcome::Success(pb::LoginSuccess {
                encrypted_sealed_key,
                login_ticket: login_ticket.expose_secret().to_vec(),
            }),
            LoginOutcome::WrongPassword {
                guesses_remaining,
                key_erased,
            } => pb::login_finish_response::Outcome::WrongPassword(pb::WrongPassword {
                guesses_remaining,
                key_erased,
            }),
        };
        Ok(Response::new(pb::LoginFinishResponse {
            outcome: Some(outcome),
        }))
    }

    async fn delete_record(
        &self,
        request: Request<pb::DeleteRecordRequest>,
    ) -> Result<Response<pb::DeleteRecordResponse>, Status> {
        let account = account(&request)?;
        let request = request.into_inner();
        self.vault
            .delete(&account, proof(request.authorization), request.start_over)
            .await?;
        Ok(Response::new(pb::DeleteRecordResponse {}))
    }

    async fn get_pointer(
        &self,
        request: Request<pb::GetPointerRequest>,
    ) -> Result<Response<pb::GetPointerResponse>, Status> {
        let account = account(&request)?;
        let pointer = self.vault.pointer(&account).await?;
        Ok(Response::new(pb::GetPointerResponse {
            committed: pointer.committed.map(backup_ref),
            pending: pointer.pending.map(pending_backup),
            auth_public_key: pointer.auth_public_key.to_vec(),
            has_password: pointer.has_password,
        }))
    }

    async fn set_pending(
        &self,
        request: Request<pb::SetPendingRequest>,
    ) -> Result<Response<pb::SetPendingResponse>, Status> {
        let account = account(&request)?;
        let request = request.into_inner();
        let pending = request.pending.ok_or_else(|| missing("pending"))?;
        let proof = required_signature(request.signature)?;
        self.vault
            .set_pending(
                &account,
                pending.generation,
                &pending.manifest_digest,
                &pending.auth_public_key,
                proof,
            )
            .await?;
        Ok(Response::new(pb::SetPendingResponse {}))
    }

    async fn confirm_pending(
        &self,
        request: Request<pb::ConfirmPendingRequest>,
    ) -> Result<Response<pb::ConfirmPendingResponse>, Status> {
        let account = account(&request)?;
        let request = request.into_inner();
        let backup = request.backup.ok_or_else(|| missing("backup"))?;
        let proof = required_signature(request.signature)?;
        self.vault
            .confirm(&account, backup.generation, &backup.manifest_digest, proof)
            .await?;
        Ok(Response::new(pb::ConfirmPendingResponse {}))
    }
}
