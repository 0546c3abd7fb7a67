enum FederationPlaceholder {}
