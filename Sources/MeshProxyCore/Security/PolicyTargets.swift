/// What a policy's `targetRef`/`targetRefs` (Istio 1.22+, instead of a `selector`) attaches it
/// to, seen from a gateway (istio/istio:pilot/pkg/model/policyattachment.go): a Gateway API
/// `Gateway` is the proxy labelled `gateway.networking.k8s.io/gateway-name: <name>` in the
/// policy's namespace; a `Service` or `ServiceEntry` is the traffic to its hosts, judged where
/// Istio's waypoint would judge it — here, at the gateway that routes to it. A `GatewayClass`
/// (waypoints) attaches to nothing a gateway is.
package enum PolicyTarget: Sendable, Equatable {
    case gateway(name: String)
    /// A Service: `<name>.<namespace>.svc.<domain>`.
    case service(name: String, namespace: String)
    /// A ServiceEntry's hosts.
    case hosts(Set<String>)
    case nothing

    /// The label Istio puts on a Gateway API gateway's deployment.
    package static let gatewayNameLabel = "gateway.networking.k8s.io/gateway-name"

    /// A policy's references, resolved: nil when it has none (its selector decides).
    package static func resolve(_ single: AuthorizationPolicy.PolicyTargetReference?, _ list: [AuthorizationPolicy.PolicyTargetReference]?,
                                namespace: String, serviceEntries: [ServiceEntry]) -> [PolicyTarget]? {
        let references = (single.map { [$0] } ?? []) + (list ?? [])
        guard single != nil || list != nil else { return nil }
        return references.map { reference in
            let name = reference.name ?? ""
            switch (reference.group ?? "", reference.kind ?? "") {
            case ("gateway.networking.k8s.io", "Gateway"): return .gateway(name: name)
            case ("", "Service"), ("core", "Service"): return .service(name: name, namespace: namespace)
            case ("networking.istio.io", "ServiceEntry"):
                let entry = serviceEntries.first { $0.name == name && $0.namespace == namespace }
                return .hosts(Set(entry?.hosts ?? []))
            default: return .nothing
            }
        }
    }

    /// The RequestAuthentications with their targets resolved, once per configuration.
    package static func attach(_ policies: [RequestAuthentication], serviceEntries: [ServiceEntry]) -> [RequestAuthentication] {
        policies.map { policy in
            var attached = policy
            attached.targets = resolve(policy.targetRef, policy.targetRefs, namespace: policy.namespace, serviceEntries: serviceEntries)
            return attached
        }
    }

    /// Whether traffic through a gateway (its labels and namespace) to `serviceHost` is what the
    /// targets name: `.gateway` when a target is this gateway, `.service` when one is the service.
    package static func match(_ targets: [PolicyTarget], policyNamespace: String, gatewayLabels: [String: String], gatewayNamespace: String,
                              serviceHost: String?) -> PolicyScope.Match? {
        var service = false
        for target in targets {
            switch target {
            case .gateway(let name):
                if policyNamespace == gatewayNamespace, gatewayLabels[gatewayNameLabel] == name { return .gateway }
            case .service(let name, let namespace):
                if let serviceHost, serviceHost.hasPrefix("\(name).\(namespace).svc.") { service = true }
            case .hosts(let hosts):
                if let serviceHost, hosts.contains(serviceHost) { service = true }
            case .nothing:
                break
            }
        }
        return service ? .service : nil
    }
}
