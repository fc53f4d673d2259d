//! WIP
use crate::web::page::PageError;
use axum::response::Response;
pub async fn page() -> Result<Response, PageError> {
    Err(PageError::not_found("page"))
}
pub async fn create_user() -> Result<Response, PageError> {
    Err(PageError::not_found("page"))
}
pub async fn disable_user() -> Result<Response, PageError> {
    Err(PageError::not_found("page"))
}
pub async fn reset_password() -> Result<Response, PageError> {
    Err(PageError::not_found("page"))
}
pub async fn create_key() -> Result<Response, PageError> {
    Err(PageError::not_found("page"))
}
pub async fn revoke_key() -> Result<Response, PageError> {
    Err(PageError::not_found("page"))
}
