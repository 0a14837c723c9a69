// Package metaserver is a read-only Kubernetes API on the edge node's
// loopback interface, served from the edge store, so that an application at
// the edge using client-go (a clientset, informers) keeps working whether or
// not the cloud is reachable.
//
// # What it serves
//
// The core group v1 (/api, /api/v1), Tether's device group
// devices.tether.io/v1beta1 (/apis, /apis/devices.tether.io/v1beta1) and
// discovery.k8s.io/v1, JSON only:
//
//   - pods, configmaps and secrets: those the store holds, which are the
//     ones the cloud sent this node (its pods and what they use), as last
//     received: a pod's status is the cloud's, not the runtime's.
//   - nodes: this node only, as the edge describes itself (its name, the
//     labels it asks for with the kubelet's defaults and the edge role,
//     and its status from nodestatus, rebuilt every Config.NodeInterval).
//     Its UID is not the API server's.
//   - services, and endpointslices (discovery.k8s.io/v1): those the store
//     holds, the Services of the namespaces the node's pods run in and
//     their EndpointSlices as filtered for this node by the cloud (only
//     the endpoints it can reach).
//   - devices and devicemodels (devices.tether.io/v1beta1): those the store
//     holds, which the cloud sent this node (its devices and their models),
//     so that a device mapper at the edge learns them with client-go and
//     keeps them with the cloud away. Their field selectors are the API
//     server's for custom resources: metadata.name and metadata.namespace.
//
// For each: GET of one object (also .../status), LIST namespaced or across
// namespaces with labelSelector and fieldSelector (the API server's fields
// per resource; any other is 400 Bad Request), and WATCH (?watch=true or the
// legacy /api/v1/watch/... paths). limit is ignored: a list always comes
// whole, without a continue token, as the API server does from its watch
// cache. Every other method is 405 Method Not Allowed.
//
// # Who may read
//
// The server listens on loopback only (Config.Addr is refused otherwise)
// and answers only requests whose Host is a loopback address or localhost,
// so that a web page in a browser on the node cannot read it by DNS
// rebinding. Every request but /healthz, /livez and /readyz needs a bearer
// token of a Config.Client (401 without one), and a client reads only its
// resources (403 otherwise). edgecore provisions two (LocalClients), their
// tokens in files of mode 0600 in dataDir/credentials: "node" reads all the
// node holds, secrets included, as the node itself may in the cluster (for
// root on the node); "devices" reads the node, its devices and device
// models, and no pod, configmap or secret (for device mappers). A process
// that cannot read a token file reads nothing. Refusals are counted
// (Server.Refused).
//
// # The in-cluster listener (Config.InCluster)
//
// A second listener, TLS only, on the pod network's side of the node (the
// resolver's address, port 10551 by default) is the Kubernetes API an edge
// pod finds with client-go's rest.InClusterConfig(): the CRI runtime sets
// KUBERNETES_SERVICE_HOST/PORT to it, the resolver answers
// kubernetes.default.svc with it, and the pod's kube-api-access volume
// holds a token minted by the node and, as ca.crt, the CA of the
// listener's certificate (package satoken). It serves the same reads, from
// the same cache, with these differences:
//
//   - Callers: only sources in InClusterConfig.Allowed (the pod network;
//     403 otherwise), each with the token of a pod the node holds: the
//     signature (the node's key), issuer, audience, node and expiry must
//     verify, and the pod of the token must be in the store with that UID,
//     name and service account (401 otherwise: a token of another node, an
//     expired or forged one, one of a deleted pod). The loopback clients'
//     tokens are not taken. Headers are at most MaxHeaderBytes (16 KiB;
//     431 beyond), tokens satoken.MaxTokenSize (4 KiB).
//   - Authorization: each get, list and watch is asked of
//     InClusterConfig.Authorizer (package accessreview: the cluster's
//     answers for the pod's service account, cached for the outage); 403
//     with the reason otherwise. Reads are scoped to what the node holds:
//     a list allowed across the cluster returns the node's objects only,
//     the view the node authorizer gives a kubelet.
//   - Writes (any method but GET and HEAD), with InClusterConfig.Writes
//     (package apirelay): a create, update, patch or delete of a resource
//     path of the API (protocol.ParseAPIWritePath: not exec, attach,
//     port-forward, proxy, logs or watch, which get 405), body at most
//     protocol.MaxAPIBody (413), is relayed to the cloud as the verified
//     pod; cloudcore sends it to the API server with a token of the pod's
//     service account bound to the pod, and the API server's answer comes
//     back as it is. With the cloud away: 503 "the cloud is unreachable".
//     Without Writes: 503 with the cloud away, 405 otherwise.
//   - Each pod has InClusterConfig.Rate requests per second (default 50,
//     burst 100); beyond them 429 with Retry-After: 1. /metrics is not
//     served to pods.
//
// Once the edge routes ClusterIPs (service routing), the default/kubernetes
// Service's ClusterIP:443 is to be DNATed to this listener; the pods then
// keep the cluster's KUBERNETES_SERVICE_HOST, the serving certificate must
// name that IP too, and the resolver's record of kubernetes.default can go.
//
// # Versions and watches
//
// The cache (cache.go) holds per resource the objects, encoded as the store
// holds them (protobuf, not decoded), and a ring of the latest
// Config.History changes. On each commit (agent.Observer.ObjectsChanged) it
// is levelled with the store: every object whose cloud resourceVersion
// changed is read again and makes an ADDED or MODIFIED event, every object
// gone a DELETED one carrying its last state.
//
// resourceVersions are the metaserver's own: one counter across resources,
// advanced by every event, as etcd's revision. An object's resourceVersion
// is the version of its last change; a LIST's is the version it is the
// state at, and a WATCH from it gets every later change. A WATCH from a
// version whose later events are no longer in the ring gets, like from the
// API server, an ERROR event with a 410 Expired status, and a reflector
// lists again. Each start of the server takes a new range of versions (the
// count of starts is kept in Config.StateDir, not taken from the clock), so
// a version from before a restart is always too old, never mistaken for one
// of this run. A count that cannot be read or saved (a torn file after a
// power loss, a full disk) does not stop the start: a random range, far
// above those reached by counting, is taken instead, with a warning. A WATCH without a version (or 0) starts with the current
// objects as ADDED events; with allowWatchBookmarks it gets a BOOKMARK every
// Config.BookmarkInterval, and with sendInitialEvents one after the initial
// events, marked with the k8s.io/initial-events-end annotation.
package metaserver
