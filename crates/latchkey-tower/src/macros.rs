//! The accessors every middleware service of this crate has, written once, as tower-http
//! does with its `define_inner_service_accessors!`.

/// Defines `get_ref`, `get_mut` and `into_inner` over the service's `inner` field; used
/// inside an `impl<S, ..> Service<S, ..>` block.
macro_rules! define_inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// The inner service, unwrapped.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

pub(crate) use define_inner_service_accessors;
