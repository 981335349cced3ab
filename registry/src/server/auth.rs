//! Glue between the router and the [`crate::auth`] module.

use http::Method;

use super::response::{self, Resp};
use super::route::Route;
use crate::auth::{Action, Denial};

/// The action a request needs, from its method and route.
pub fn action_for(method: &Method, route: &Route) -> Action {
    match route {
        Route::Base => Action::Probe,
        Route::Catalog => Action::Catalog,
        _ if *method == Method::DELETE && !matches!(route, Route::Upload(..)) => Action::Delete,
        _ if matches!(*method, Method::GET | Method::HEAD) && !matches!(route, Route::Upload(..)) => Action::Pull,
        _ => Action::Push,
    }
}

/// The error response of a refusal, with its challenge headers.
pub fn denial_response(denial: Denial, head: bool) -> Resp {
    let mut resp = response::error(&denial.error, head);
    for (name, value) in denial.headers {
        resp.headers_mut().append(name, response::hv(&value));
    }
    resp
}
