/// The identity that binds a gateway to its cluster.
///
/// Every EastWest gateway of cluster `C` carries
/// `spiffe://<trust-domain>/ns/istio-system/sa/eastwest-gateway-<C>`: the namespace and the
/// service-account layout of Istio's east-west gateway, the cluster in the account name. The
/// cluster CA signs it as any workload (Istio's plug-in CA layout is unchanged). A gateway may
/// then speak only for the cluster its certificate names: gossip about another cluster's
/// membership or endpoints from it is dropped, and a gateway dialled as cluster `C`'s must
/// present `C`'s identity.
package enum GatewayIdentity {
    package static let namespace = "istio-system"
    package static let serviceAccountPrefix = "eastwest-gateway-"

    package static func spiffeID(cluster: String, trustDomain: String) throws(SpiffeIDError) -> SpiffeID {
        try SpiffeID(trustDomain: trustDomain, namespace: namespace, serviceAccount: serviceAccountPrefix + cluster)
    }

    /// The operator identity admin writes take over TLS by default (a gateway's `adminOperators`),
    /// in the gateways' namespace; `eastwest ca operator` and `eastwest up` issue it.
    package static let operatorServiceAccount = "eastwest-operator"

    package static func operatorID(trustDomain: String, serviceAccount: String = operatorServiceAccount) throws(SpiffeIDError) -> SpiffeID {
        try SpiffeID(trustDomain: trustDomain, namespace: namespace, serviceAccount: serviceAccount)
    }

    /// The cluster a gateway identity speaks for; nil when `id` is not a gateway identity.
    package static func cluster(of id: SpiffeID) -> String? {
        guard id.namespace == namespace, let account = id.serviceAccount, account.hasPrefix(serviceAccountPrefix),
              account.count > serviceAccountPrefix.count else { return nil }
        return String(account.dropFirst(serviceAccountPrefix.count))
    }

    /// Why a cluster name cannot be part of a gateway identity, or nil when it can.
    package static func problem(withClusterName name: String) -> String? {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
        guard !name.isEmpty, name.allSatisfy(allowed.contains), name != ".", name != ".." else {
            return "'\(name)' must be letters, digits, '.', '-' or '_': it is part of the gateway's SPIFFE ID"
        }
        return nil
    }
}

/// Which verified identities count as peer gateways: any cluster's gateway identity, or only the
/// config's `peerGatewayIdentities` when it lists some. Decided once per config, so the check
/// on every accepted connection is a set probe at most. Trust domains are the trust policy's to
/// check; identities reaching this rule have passed it.
package struct PeerGatewayRule: Sendable {
    package let listed: Set<SpiffeID>?

    package init(listed: Set<SpiffeID>?) { self.listed = listed }

    /// Whether `id` is a peer gateway, of any cluster (`cluster == nil`) or of `cluster`.
    package func admits(_ id: SpiffeID, cluster: String? = nil) -> Bool {
        let named = GatewayIdentity.cluster(of: id)
        if let listed {
            guard listed.contains(id) else { return false }
            // A listed identity outside the gateway form is trusted for any cluster it is dialled as.
            return cluster == nil || named.map { $0 == cluster } ?? true
        }
        guard let named else { return false }
        return cluster == nil || named == cluster
    }
}
