package bench

// shipRouteName says which route the ship measurement used: the node's own
// (node.Route), which reads only the envelope fields off the wire.
const shipRouteName = "node.Route"
