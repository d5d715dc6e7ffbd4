// Package schemas holds the JSON Schemas (2020-12) of the worker's wire
// contract, embedded so that the binary validates with exactly the documents
// it ships.
package schemas

import (
	"bytes"
	_ "embed"
	"fmt"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// JobV1 is schemas/job.v1.json.
//
//go:embed job.v1.json
var JobV1 []byte

// ResultV1 is schemas/result.v1.json.
//
//go:embed result.v1.json
var ResultV1 []byte

// Compile compiles one of the embedded documents, with format assertions on.
func Compile(name string, doc []byte) (*jsonschema.Schema, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.AssertContent()
	if err := c.AddResource(name, v); err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	s, err := c.Compile(name)
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", name, err)
	}
	return s, nil
}

// Job compiles job.v1.json.
func Job() (*jsonschema.Schema, error) { return Compile("job.v1.json", JobV1) }

// Result compiles result.v1.json.
func Result() (*jsonschema.Schema, error) { return Compile("result.v1.json", ResultV1) }
