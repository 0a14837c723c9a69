// Package mqtt holds the MQTT topics and JSON payloads of device twins, as
// KubeEdge's mappers and apps speak them, so that they work with Tether
// unchanged. It has types, builders, parsers and validation only: no client,
// no IO.
//
// Topics are parsed once, by ParseTopic, into a Topic whose Kind receivers
// switch on; nothing downstream routes by string. Device topics name a
// device by two segments, namespace and name:
//
//	$hw/events/device/<ns>/<name>/twin/update            device → edge
//	$hw/events/device/<ns>/<name>/twin/update/result     edge → device
//	$hw/events/device/<ns>/<name>/twin/update/delta      edge → device
//	$hw/events/device/<ns>/<name>/twin/update/document   edge → device
//	$hw/events/device/<ns>/<name>/twin/get               device → edge
//	$hw/events/device/<ns>/<name>/twin/get/result        edge → device
//	$hw/events/device/<ns>/<name>/state/update           device → edge
//	$hw/events/device/<ns>/<name>/state/update/result    edge → device
//	$hw/events/device/<ns>/<name>/updated                edge → device
//	$hw/events/node/<node>/membership/get                device → edge
//	$hw/events/node/<node>/membership/get/result         edge → device
//	$hw/events/node/<node>/membership/updated            edge → device
//	$hw/events/connected/<client>                        broker
//	$hw/events/disconnected/<client>                     broker
//	$hw/events/upload/<path>                             device → edge
//	$ke/events/device/<ns>/<name>/data/update            data plane
//
// The edge subscribes to EdgeSubscriptions.
//
// Decoders are strict: a payload larger than MaxPayloadBytes, malformed
// JSON, an unknown field, trailing data, a property name that is empty, of
// MaxNameBytes or more or with a character outside [A-Za-z0-9-_.,:/@#], or a
// value of MaxValueBytes or more is refused with an error that says which;
// the caller answers it with an ErrorResult of CodeBadRequest.
package mqtt
