//! `cylance-logs check`: configuration, credentials and one page per source.
//!
//! Writes nothing (no state directory, no lock, no output), so it is safe to
//! run beside the timer. Fails with the same exit codes a poll would.

use crate::api::{ApiClient, ListRequest};
use crate::config::{ApiSettings, RunSettings};
use crate::control::RunControl;
use crate::retry::RetryPolicy;
use crate::timefmt::display;
use anyhow::Result;

pub fn check(
    api: ApiSettings,
    settings: &RunSettings,
    retry: RetryPolicy,
    control: RunControl,
) -> Result<()> {
    println!(
        "api: {} (tenant {}, app {})",
        api.base_url, api.tenant_id, api.app_id
    );
    let client = ApiClient::new(api, retry, settings.max_rps, control)?;
    for kind in &settings.sources {
        let list = ListRequest {
            path: kind.path(),
            privilege: kind.privilege(),
            page_size: kind.page_size(),
            filters: &[],
        };
        let page = client.fetch_page(&list, 1)?;
        let newest = page
            .items()
            .filter_map(|item| kind.meta(item).ok())
            .map(|meta| meta.time)
            .max();
        let total = page.total_number_of_items;
        println!(
            "{}: ok, {} items in all, newest {} {}",
            kind.name(),
            total.map_or("an unknown number of".to_string(), |n| n.to_string()),
            kind.time_field(),
            newest.map_or("(none)".to_string(), display)
        );
    }
    println!("check passed");
    Ok(())
}
