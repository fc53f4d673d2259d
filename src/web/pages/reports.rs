//! WIP
use crate::web::page::PageError;
use axum::response::Response;
pub async fn page() -> Result<Response, PageError> {
    Err(PageError::not_found("page"))
}
pub async fn view() -> Result<Response, PageError> {
    Err(PageError::not_found("page"))
}
