//! Bearer-token authentication of gRPC calls.
//!
//! With a token configured, every call needs `authorization: Bearer <token>`, streaming
//! calls included, and server reflection too: it shows the whole API, and grpcurl's `-H`
//! sends the header with its reflection calls as well. Only `grpc.health.v1` stays open,
//! so load balancers and orchestrators can probe without the token. The presented token is
//! compared in constant time (over SHA-256 digests, so its length leaks nothing either),
//! and the refusal never repeats what was sent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::body::Body;
use tonic::codegen::http;
use tower::{Layer, Service};

/// Calls under this path prefix need no token.
const OPEN_PREFIX: &str = "/grpc.health.v1.Health/";

/// A secret string whose `Debug` output shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The token, or an error for an empty one (which would protect nothing).
    pub fn new(token: String) -> Result<BearerToken, &'static str> {
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err("the gRPC token must not be empty");
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err("the gRPC token must be printable ASCII without spaces");
        }
        Ok(BearerToken(token))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

/// Requires the bearer token on every call but health checks; passes everything through
/// without a token.
#[derive(Clone)]
pub struct AuthLayer {
    expected: Option<Arc<[u8; 32]>>,
}

impl AuthLayer {
    pub fn new(token: Option<&BearerToken>) -> AuthLayer {
        AuthLayer {
            expected: token.map(|token| Arc::new(digest(token.expose().as_bytes()))),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            expected: self.expected.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    expected: Option<Arc<[u8; 32]>>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if allowed(self.expected.as_deref(), &request) {
            return Box::pin(self.inner.call(request));
        }
        let refusal = tonic::Status::unauthenticated(
            "this call needs a valid `authorization: Bearer <token>` header",
        );
        Box::pin(std::future::ready(Ok(refusal.into_http())))
    }
}

fn allowed<B>(expected: Option<&[u8; 32]>, request: &http::Request<B>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    if request.uri().path().starts_with(OPEN_PREFIX) {
        return true;
    }
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer);
    presented.is_some_and(|token| digest(token.as_bytes()).ct_eq(expected).into())
}

/// The token of a `Bearer` credential; the scheme is case-insensitive.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, authorization: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(path);
        if let Some(value) = authorization {
            builder = builder.header("authorization", value);
        }
        builder.body(()).expect("a request")
    }

    const CALL: &str = "/mailchimp_sync.v1.AccountService/ListAccounts";

    #[test]
    fn without_a_token_every_call_passes() {
        assert!(allowed(None, &request(CALL, None)));
    }

    #[test]
    fn the_right_token_passes_in_any_scheme_case() {
        let expected = digest(b"s3cret");
        assert!(allowed(
            Some(&expected),
            &request(CALL, Some("Bearer s3cret"))
        ));
        assert!(allowed(
            Some(&expected),
            &request(CALL, Some("bearer  s3cret "))
        ));
    }

    #[test]
    fn a_wrong_missing_or_malformed_token_is_refused() {
        let expected = digest(b"s3cret");
        for header in [
            None,
            Some("Bearer s3cre"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            assert!(
                !allowed(Some(&expected), &request(CALL, header)),
                "{header:?}"
            );
        }
    }

    #[test]
    fn health_checks_need_no_token_but_reflection_does() {
        let expected = digest(b"s3cret");
        let health = request("/grpc.health.v1.Health/Check", None);
        assert!(allowed(Some(&expected), &health));
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert!(!allowed(Some(&expected), &request(reflection, None)));
    }

    #[test]
    fn an_empty_or_spaced_token_is_refused_at_start() {
        assert!(BearerToken::new("  ".into()).is_err());
        assert!(BearerToken::new("two words".into()).is_err());
        let token = BearerToken::new("abc".into()).expect("a token");
        assert_eq!(format!("{token:?}"), "BearerToken(..)");
    }
}
