package ingest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
)

// DevSecret is one source's secret for `worker dev`: Key goes into Secrets,
// Text is what the operator pastes into a sender (or curl).
type DevSecret struct {
	Key  []byte
	Text string
}

// DevSecrets are fresh random secrets for every source, for `worker dev`,
// which prints them; never for production, where secrets come from files.
type DevSecrets struct {
	CloudEvents, BambooHR, HiBob, SCIMToken DevSecret
}

// NewDevSecrets makes random secrets: the CloudEvents one in the Standard
// Webhooks whsec_ form, the others as hex.
func NewDevSecrets() DevSecrets {
	rnd := func() []byte {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		return b
	}
	ce := rnd()
	hx := func() DevSecret {
		t := hex.EncodeToString(rnd())
		return DevSecret{Key: []byte(t), Text: t}
	}
	return DevSecrets{
		CloudEvents: DevSecret{Key: ce, Text: "whsec_" + base64.StdEncoding.EncodeToString(ce)},
		BambooHR:    hx(), HiBob: hx(), SCIMToken: hx(),
	}
}

// Secrets returns the keys to put in Config.Secrets.
func (d DevSecrets) Secrets() Secrets {
	return Secrets{CloudEvents: d.CloudEvents.Key, BambooHR: d.BambooHR.Key, HiBob: d.HiBob.Key, SCIMToken: d.SCIMToken.Key}
}
