//! `etcdserverpb.Auth`: enabling auth, logging in, users and roles, with
//! etcd's semantics and messages (`server/auth/store.go`, `v3_server.go`).
//! Changes go through Raft (checked again when applied, see
//! `core::auth::apply`); passwords are hashed here with bcrypt before they
//! are proposed, so neither the Raft log nor the data dir ever holds one.
//! Reads (`UserGet`, `UserList`, `RoleGet`, `RoleList`, `AuthStatus`)
//! are linearizable reads of the replicated records.

use tonic::{Request, Response, Status};

use crate::core::api::ApiContext;
use crate::core::auth::pb::authpb::UserAddOptions;
use crate::core::auth::pb::etcdserverpb::auth_server::Auth;
use crate::core::auth::pb::etcdserverpb::*;
use crate::core::auth::{tokens_prefix, Identity};
use crate::core::errors::EtcdError;
use crate::core::mvcc::ApplyResponse;
use crate::core::raft::proposal::{AuthenticateEntry, Op};
use crate::core::types::Revision;

/// The Auth service.
pub struct AuthService {
    /// Shared API state.
    pub ctx: ApiContext,
}

type Answer<T> = Result<Response<T>, Status>;

impl AuthService {
    /// Proposes an auth change for `who`; the response header's revision.
    async fn change(&self, op: Op, who: &Identity) -> Result<(Option<String>, i64), EtcdError> {
        self.ctx.reject_learner()?;
        // Bound what a caller can make the log carry (names, keys).
        if op.encoded_len() > self.ctx.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        match self
            .ctx
            .node
            .propose_as(op, who, self.ctx.request_timeout)
            .await?
        {
            ApplyResponse::Auth { token, revision } => Ok((token, revision)),
            other => Err(EtcdError::Internal(format!(
                "unexpected apply response {other:?}"
            ))),
        }
    }

    /// An admin change: root (when auth is on), then through Raft.
    async fn admin_change<T>(&self, request: &Request<T>, op: Op) -> Result<i64, Status> {
        let who = self.ctx.admin(request).await?;
        Ok(self.change(op, &who).await?.1)
    }

    fn header(&self, revision: i64) -> Option<etcd_client::proto::PbResponseHeader> {
        Some(self.ctx.header(Revision(revision)))
    }

    /// A linearizable view of the records and the current revision.
    async fn read(&self) -> Result<(std::sync::Arc<crate::core::auth::AuthState>, i64), EtcdError> {
        self.ctx
            .node
            .linearizable_barrier(self.ctx.request_timeout)
            .await?;
        let state = self.ctx.auth.state()?;
        Ok((state, self.ctx.current_revision()?.0))
    }

    /// bcrypt at this member's cost, off the async threads (cost 10 takes
    /// tens of milliseconds).
    async fn hash(&self, password: String) -> Result<String, EtcdError> {
        let auth = self.ctx.auth.clone();
        tokio::task::spawn_blocking(move || auth.hash_password(&password))
            .await
            .map_err(|e| EtcdError::Internal(format!("bcrypt task: {e}")))?
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, request: Request<AuthEnableRequest>) -> Answer<AuthEnableResponse> {
        let revision = self
            .admin_change(&request, Op::AuthEnable(AuthEnableRequest {}))
            .await?;
        Ok(Response::new(AuthEnableResponse {
            header: self.header(revision),
        }))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Answer<AuthDisableResponse> {
        let revision = self
            .admin_change(&request, Op::AuthDisable(AuthDisableRequest {}))
            .await?;
        Ok(Response::new(AuthDisableResponse {
            header: self.header(revision),
        }))
    }

    async fn auth_status(&self, request: Request<AuthStatusRequest>) -> Answer<AuthStatusResponse> {
        self.ctx.admin(&request).await?;
        let (state, revision) = self.read().await?;
        Ok(Response::new(AuthStatusResponse {
            header: self.header(revision),
            enabled: state.enabled,
            auth_revision: state.revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Answer<AuthenticateResponse> {
        let req = request.into_inner();
        self.ctx
            .node
            .linearizable_barrier(self.ctx.request_timeout)
            .await?;
        let auth = self.ctx.auth.clone();
        let (name, password) = (req.name.clone(), req.password);
        let auth_revision =
            tokio::task::spawn_blocking(move || auth.check_password(&name, &password))
                .await
                .map_err(|e| EtcdError::Internal(format!("bcrypt task: {e}")))??;
        if let Some(jwt) = &self.ctx.auth.jwt {
            // Signed here: nothing to register on the other members.
            return Ok(Response::new(AuthenticateResponse {
                header: self.header(self.ctx.current_revision()?.0),
                token: jwt.sign(&req.name, auth_revision)?,
            }));
        }
        let entry = AuthenticateEntry {
            name: req.name,
            prefix: tokens_prefix(),
        };
        let (token, revision) = self.change(Op::Authenticate(entry), &None).await?;
        Ok(Response::new(AuthenticateResponse {
            header: self.header(revision),
            token: token.unwrap_or_default(),
        }))
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Answer<AuthUserAddResponse> {
        let who = self.ctx.admin(&request).await?;
        let mut req = request.into_inner();
        if req.name.is_empty() {
            return Err(EtcdError::UserEmpty.into());
        }
        let no_password = req.options.as_ref().is_some_and(|o| o.no_password);
        let password = std::mem::take(&mut req.password);
        req.hashed_password = if no_password {
            String::new()
        } else {
            self.hash(password).await?
        };
        req.options = Some(UserAddOptions { no_password });
        let (_, revision) = self.change(Op::UserAdd(req), &who).await?;
        Ok(Response::new(AuthUserAddResponse {
            header: self.header(revision),
        }))
    }

    async fn user_get(&self, request: Request<AuthUserGetRequest>) -> Answer<AuthUserGetResponse> {
        let who = self.ctx.identity(&request).await?;
        let name = request.into_inner().name;
        // Root, or the user asking about itself.
        if who.as_ref().is_some_and(|w| w.user != name) {
            self.ctx.auth.check_admin(&who)?;
        }
        let (state, revision) = self.read().await?;
        let user = state.users.get(&name).ok_or(EtcdError::UserNotFound)?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.header(revision),
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Answer<AuthUserListResponse> {
        self.ctx.admin(&request).await?;
        let (state, revision) = self.read().await?;
        let mut users: Vec<String> = state.users.keys().cloned().collect();
        users.sort();
        Ok(Response::new(AuthUserListResponse {
            header: self.header(revision),
            users,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Answer<AuthUserDeleteResponse> {
        let op = Op::UserDelete(request.get_ref().clone());
        let revision = self.admin_change(&request, op).await?;
        Ok(Response::new(AuthUserDeleteResponse {
            header: self.header(revision),
        }))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Answer<AuthUserChangePasswordResponse> {
        let who = self.ctx.admin(&request).await?;
        let mut req = request.into_inner();
        let password = std::mem::take(&mut req.password);
        req.hashed_password = self.hash(password).await?;
        let (_, revision) = self.change(Op::UserChangePassword(req), &who).await?;
        Ok(Response::new(AuthUserChangePasswordResponse {
            header: self.header(revision),
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Answer<AuthUserGrantRoleResponse> {
        let op = Op::UserGrantRole(request.get_ref().clone());
        let revision = self.admin_change(&request, op).await?;
        Ok(Response::new(AuthUserGrantRoleResponse {
            header: self.header(revision),
        }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Answer<AuthUserRevokeRoleResponse> {
        let op = Op::UserRevokeRole(request.get_ref().clone());
        let revision = self.admin_change(&request, op).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse {
            header: self.header(revision),
        }))
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Answer<AuthRoleAddResponse> {
        if request.get_ref().name.is_empty() {
            self.ctx.admin(&request).await?;
            return Err(EtcdError::RoleEmpty.into());
        }
        let op = Op::RoleAdd(request.get_ref().clone());
        let revision = self.admin_change(&request, op).await?;
        Ok(Response::new(AuthRoleAddResponse {
            header: self.header(revision),
        }))
    }

    async fn role_get(&self, request: Request<AuthRoleGetRequest>) -> Answer<AuthRoleGetResponse> {
        let who = self.ctx.identity(&request).await?;
        let role = request.into_inner().role;
        let (state, revision) = self.read().await?;
        // Root, or a user holding the role.
        let holds = who.as_ref().is_none_or(|w| {
            state
                .users
                .get(&w.user)
                .is_some_and(|u| u.roles.contains(&role))
        });
        if !holds {
            self.ctx.auth.check_admin(&who)?;
        }
        let found = state.roles.get(&role).ok_or(EtcdError::RoleNotFound)?;
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header(revision),
            perm: found.key_permission.clone(),
        }))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Answer<AuthRoleListResponse> {
        self.ctx.admin(&request).await?;
        let (state, revision) = self.read().await?;
        let mut roles: Vec<String> = state.roles.keys().cloned().collect();
        roles.sort();
        Ok(Response::new(AuthRoleListResponse {
            header: self.header(revision),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Answer<AuthRoleDeleteResponse> {
        let op = Op::RoleDelete(request.get_ref().clone());
        let revision = self.admin_change(&request, op).await?;
        Ok(Response::new(AuthRoleDeleteResponse {
            header: self.header(revision),
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Answer<AuthRoleGrantPermissionResponse> {
        let op = Op::RoleGrantPermission(request.get_ref().clone());
        let revision = self.admin_change(&request, op).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse {
            header: self.header(revision),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Answer<AuthRoleRevokePermissionResponse> {
        let op = Op::RoleRevokePermission(request.get_ref().clone());
        let revision = self.admin_change(&request, op).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse {
            header: self.header(revision),
        }))
    }
}
