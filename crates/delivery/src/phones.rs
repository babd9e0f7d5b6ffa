//! Whether a phone number is shared: several people of a district reachable at it (a
//! family phone), so texts to it are labelled with whom they are for.

use async_trait::async_trait;
use homeroom_domain::DistrictId;
use homeroom_projections::ReadModels;

/// Answers whether several people of a district share a phone number.
#[async_trait]
pub trait SharedPhones: Send + Sync {
    /// Whether more than one person of `district` has `number` (E.164).
    ///
    /// # Errors
    /// [`homeroom_projections::QueryError`] when it cannot tell.
    async fn is_shared(
        &self,
        district: &DistrictId,
        number: &str,
    ) -> Result<bool, homeroom_projections::QueryError>;
}

/// The directory read model answers (eventually consistent: a label is a courtesy, not a
/// rule, so a number registered a moment ago may go unlabelled once).
#[async_trait]
impl SharedPhones for ReadModels {
    async fn is_shared(
        &self,
        district: &DistrictId,
        number: &str,
    ) -> Result<bool, homeroom_projections::QueryError> {
        Ok(self.people_at_address(district, number).await?.len() > 1)
    }
}

/// Nobody shares a phone: for tests and tools that have no read models.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSharedPhones;

#[async_trait]
impl SharedPhones for NoSharedPhones {
    async fn is_shared(
        &self,
        _district: &DistrictId,
        _number: &str,
    ) -> Result<bool, homeroom_projections::QueryError> {
        Ok(false)
    }
}
