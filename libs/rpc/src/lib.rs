//! What every gRPC hop of the workspace shares: the server setup (TLS,
//! health, reflection, authentication, TCP_NODELAY) and the client channel
//! setup (trusted CA, deadlines, keep-alive). Work in progress.
